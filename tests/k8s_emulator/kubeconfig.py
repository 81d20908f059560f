"""A kubeconfig pointing real clients (kubernetes-asyncio, kubectl) at the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def render(server: str, token: str, namespace: str, context: str = "emulator") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": f"{context}-user", "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }


def write(
    path: str | Path, server: str, token: str, namespace: str, context: str = "emulator"
) -> Path:
    target = Path(path)
    target.write_text(yaml.safe_dump(render(server, token, namespace, context)))
    target.chmod(0o600)  # kubeconfigs hold credentials; clients warn about looser modes
    return target
