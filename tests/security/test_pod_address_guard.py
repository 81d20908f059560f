"""A message's source staged inside a UI pod is under the same address guard as the agent's.

With ``deployer: kubernetes`` the pod's ``serve-ui`` stages the source itself, so the agent's
guarded stager never runs: a ``vis_request`` naming an internal URL would have the pod fetch it
(the egress NetworkPolicy is a second net, where a CNI enforces it). The deployer now passes
``--guard-addresses`` (and the operator's ``allow_private_addresses``) for such sources, and the
real ``idds-vis serve-ui`` refuses before connecting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

from idds_vis.deploy.kubernetes.objects import deployment
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from tests.integration.test_kube_deployer import NOW
from tests.security.test_message_sources import recorder

CLI = [sys.executable, "-m", "idds_vis"]


def _instance(origin: str) -> Instance:
    return Instance(task_id="4242", tool="mlflow", name=InstanceKey("4242").name,
                    phase=Phase.DEPLOYING, source="https://files.example/x.tgz",
                    ttl=timedelta(hours=1), created_at=NOW, updated_at=NOW,
                    origin=origin)  # fmt: skip


def _args(inst: Instance, ks: KubeSettings) -> list[str]:
    body = deployment(inst, ks, inst.source or "", None, secret=False)
    args: list[str] = body["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_a_message_source_is_staged_under_the_guard_in_the_pod() -> None:
    ks = KubeSettings(namespace="vis", allow_private_addresses=("10.20.0.0/16", "minio.local"))
    for origin in ("vis_request", "idds"):
        args = _args(_instance(origin), ks)
        assert "--guard-addresses" in args
        listed = [args[i + 1] for i, a in enumerate(args) if a == "--allow-private-address"]
        assert listed == ["10.20.0.0/16", "minio.local"]
    # The operator's own sources (the CLI, PanDA templates) are staged as before.
    for origin in ("cli", "panda", "permalink"):
        assert "--guard-addresses" not in _args(_instance(origin), ks)


async def test_serve_ui_with_the_guard_refuses_loopback_before_connecting(tmp_path) -> None:
    async with recorder() as server:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "serve-ui", "--source", server.url + "/outputs.tgz", "--prefix", "/vis/x",
            "--port", "1", "--workdir", str(tmp_path / "w"), "--guard-addresses",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            out, _ = await proc.communicate()
        assert proc.returncode != 0
        assert "address not allowed" in out.decode() or "refused" in out.decode(), out.decode()
        assert server.hits == []


async def test_serve_ui_with_the_guard_reaches_a_listed_address(tmp_path) -> None:
    async with recorder() as server:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "serve-ui", "--source", server.url + "/outputs.tgz", "--prefix", "/vis/x",
            "--port", "1", "--workdir", str(tmp_path / "w"), "--guard-addresses",
            "--allow-private-address", "127.0.0.1/32",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(120):
            await proc.communicate()
        assert proc.returncode != 0  # the recorder serves no archive
        assert server.hits == ["/outputs.tgz"]
