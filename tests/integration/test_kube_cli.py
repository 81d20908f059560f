"""``idds-vis deploy`` / ``teardown --backend kubernetes`` as scripts call them, on the emulator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from idds_vis.domain.naming import instance_name
from tests.k8s_emulator import KubeEmulator

NS = "vis"


async def idds_vis(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idds_vis", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_deploy_no_wait_prints_the_objects_and_teardown_removes_them(tmp_path: Path) -> None:
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
        common = ["--kubeconfig", kubeconfig, "--namespace", NS, "--task", "4711"]
        code, out, err = await idds_vis(
            "deploy", "--backend", "kubernetes", *common,
            "--source", "https://bigpanda.example/idds/downloadhpometrics/?workloadid=4711",
            "--no-wait",
        )  # fmt: skip
        assert code == 0, err
        printed = json.loads(out)
        name = instance_name("4711", "mlflow")
        kinds = {(o["kind"], o["name"]) for o in printed["objects"]}
        kinds_made = ("Deployment", "Secret", "Service", "Ingress", "NetworkPolicy")
        assert kinds == {(k, name) for k in kinds_made}
        assert emu.get("deployments", name, NS) is not None

        code, out, err = await idds_vis("teardown", "--backend", "kubernetes", *common)
        assert code == 0, err
        assert json.loads(out)["gone"] is True
        for kind in ("deployments", "secrets", "services", "ingresses", "networkpolicies", "pods"):
            assert emu.list(kind, NS) == [], kind
