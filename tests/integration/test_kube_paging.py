"""The reconciler's Deployment list: read in pages, restarted on 410, retried on 503."""

from __future__ import annotations

from pathlib import Path

from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from tests.integration.test_kube_deployer import NS, instance
from tests.k8s_emulator import KubeEmulator


async def test_running_pages_through_expiry_and_errors(tmp_path: Path) -> None:
    async with KubeEmulator() as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
        kube = KubeClient(str(kubeconfig), call_timeout=5, retry_budget=10)
        deployer = KubernetesDeployer(KubeSettings(namespace=NS), kube, list_chunk=2)
        try:
            for i in range(5):
                await deployer.deploy(instance(f"page-{i}"), None)
            listed = {ui.name for ui in await deployer.running()}
            assert listed == {instance(f"page-{i}").name for i in range(5)}
            assert emu.request_count("list", "deployments") >= 3  # 5 in pages of 2

            emu.inject_failure(503, verb="list", resource="deployments", times=1)
            assert {ui.name for ui in await deployer.running()} == listed  # retried

            # The history compacts between two pages: the continue token is gone (410), and
            # one full list replaces the pages, as client-go's pager does.
            real, calls = deployer._list_page, []

            async def compacting(apps, token, limit):  # type: ignore[no-untyped-def]
                calls.append((token is not None, limit))
                page = await real(apps, token, limit)
                if len(calls) == 1:
                    emu.expire_resource_versions()
                return page

            deployer._list_page = compacting  # type: ignore[method-assign]
            assert {ui.name for ui in await deployer.running()} == listed
            # The Deployments' list first; then each dependent kind's (each its own pager).
            assert calls[:3] == [(False, 2), (True, 2), (False, None)]
        finally:
            await kube.close()
