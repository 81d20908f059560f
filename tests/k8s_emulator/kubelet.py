"""What a container would really be started with: the kubelet's environment (env, envFrom,
secretKeyRef/configMapKeyRef) and its `$(VAR)` expansion of command and args.

Tests use it to check that a pod gets a value through a reference (a Secret) while the Pod
object itself holds only the reference."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError, with its message."""


def _data(store: Store, plural: str, namespace: str, name: str, optional: bool) -> dict[str, str]:
    obj = store.get(plural, namespace, name)
    if obj is None:
        if optional:
            return {}
        raise ContainerConfigError(f'{plural[:-1]} "{name}" not found')
    if plural == "secrets":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _key(store: Store, plural: str, namespace: str, ref: dict[str, Any]) -> str | None:
    optional = bool(ref.get("optional"))
    data = _data(store, plural, namespace, ref["name"], optional)
    if ref["key"] not in data:
        if optional:
            return None
        kind = "Secret" if plural == "secrets" else "ConfigMap"
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
        )
    return data[ref["key"]]


def environment(store: Store, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """envFrom first, then env (later wins); `$(VAR)` in env values refers to earlier ones."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for key, plural in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
            if key in source:
                ref = source[key]
                data = _data(store, plural, namespace, ref["name"], bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        if "valueFrom" not in var:
            env[var["name"]] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value = None
        if "secretKeyRef" in source:
            value = _key(store, "secrets", namespace, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key(store, "configmaps", namespace, source["configMapKeyRef"])
        if value is not None:
            env[var["name"]] = value
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion: `$(VAR)` becomes VAR's value if defined (else stays as is),
    `$$` becomes `$`; nothing is expanded twice."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def argv(store: Store, pod: dict[str, Any], name: str) -> list[str]:
    """The container's command and args as the kubelet would start them (the image's
    entrypoint, when no command is given, is not known here and left out)."""
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
    env = environment(store, pod, container)
    return [
        expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]
    ]
