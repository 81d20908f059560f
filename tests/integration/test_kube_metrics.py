"""Kubernetes API errors are counted by status code, retried ones included."""

from __future__ import annotations

from pathlib import Path

from idds_vis.agent.metrics import AgentMetrics
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_deployer
from tests.integration.test_kube_deployer import NS, instance
from tests.k8s_emulator import KubeEmulator


async def test_failed_calls_are_counted_by_status(tmp_path: Path) -> None:
    async with KubeEmulator() as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
        settings = Settings(state_dir=tmp_path, deployer="kubernetes", namespace=NS,
                            kubeconfig=str(kubeconfig))  # fmt: skip
        metrics = AgentMetrics()
        deployer = build_deployer(settings, metrics)
        assert isinstance(deployer, KubernetesDeployer)
        emu.inject_failure(503, verb="create", resource="deployments", times=2)
        try:
            await deployer.deploy(instance("k-1"), None)  # retried through two 503s
            await deployer.delete(instance("k-1"))
            await deployer.delete(instance("k-1"))  # gone: a 404, which counts as deleted
        finally:
            await deployer.kube.close()
    errors = metrics.kube_errors
    assert errors.labels("503")._value.get() == 2
    assert errors.labels("404")._value.get() >= 1
