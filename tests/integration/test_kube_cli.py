"""``idds-vis deploy`` / ``teardown --backend kubernetes`` as scripts call them, on the emulator."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
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


async def test_a_failed_deploy_removes_what_it_made(tmp_path: Path) -> None:
    """Nobody else would ever delete it: a crashing UI, a quota, a 403 leave nothing behind."""
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
        name = instance_name("4712", "mlflow")
        emu.set_behaviour("crash", name=name)
        code, out, err = await idds_vis(
            "deploy", "--backend", "kubernetes", "--kubeconfig", kubeconfig, "--namespace", NS,
            "--task", "4712", "--source", "https://bigpanda.example/x.tgz", "--timeout", "60s",
        )  # fmt: skip
        assert code == 1 and out == ""
        err = " ".join(err.split())  # the console wraps long lines
        assert "keeps crashing" in err and "its objects were removed" in err, err
        for kind in ("deployments", "secrets", "services", "ingresses", "networkpolicies", "pods"):
            assert emu.list(kind, NS) == [], kind


async def test_a_failed_deploy_leaves_a_strangers_deployment_alone(tmp_path: Path) -> None:
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
        name = instance_name("4713", "mlflow")
        pod = {"containers": [{"name": "x", "image": "x"}]}
        template = {"metadata": {"labels": {"app": "x"}}, "spec": pod}
        stranger = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                    "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}
        emu.create(stranger, NS)
        code, _out, err = await idds_vis(
            "deploy", "--backend", "kubernetes", "--kubeconfig", kubeconfig, "--namespace", NS,
            "--task", "4713", "--source", "https://bigpanda.example/x.tgz", "--no-wait",
        )  # fmt: skip
        err = " ".join(err.split())
        assert code == 1 and "not managed by idds-vis" in err, err
        assert "is not idds-vis's and was left alone" in err, err
        assert emu.get("deployments", name, NS) is not None


async def test_a_redeploy_prints_the_expiry_the_cluster_holds(tmp_path: Path) -> None:
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
        common = ["deploy", "--backend", "kubernetes", "--kubeconfig", kubeconfig,
                  "--namespace", NS, "--task", "4714", "--source", "https://b.example/x.tgz",
                  "--no-wait"]  # fmt: skip
        name = instance_name("4714", "mlflow")
        for ttl in ("1h", "5h"):
            code, out, err = await idds_vis(*common, "--ttl", ttl)
            assert code == 0, err
            printed = datetime.fromisoformat(json.loads(out)["expires_at"])
            notes = emu.get("deployments", name, NS)["metadata"]["annotations"]
            assert datetime.fromisoformat(notes["idds-vis/expires-at"]) == printed, ttl
            assert notes["janitor/expires"] == notes["idds-vis/expires-at"]
