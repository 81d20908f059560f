"""``idds-vis agent`` as a process on the real control plane with conf/'s two-namespace layout
(issue 17): the ServiceAccount's token only, its Lease in the agent's namespace, every UI object
in the UIs' namespace. The reconciler removes a stray UI there at start, a UI becomes ready
through the real probe, and the reaper ends it (the garbage collector removes what it owned)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest_asyncio

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.real_k8s.cluster_view import ClusterView, until
from tests.real_k8s.conftest import AgentAccess
from tests.real_k8s.control_plane import ControlPlane
from tests.real_k8s.stand_ins import StandInIngress, StandInKubelet, admin_api
from tests.real_k8s.test_agent import SOURCE, agent_process, agent_settings, leases, phase_of
from tests.real_k8s.test_deployer import instance


@pytest_asyncio.fixture
async def views(
    k8s: ControlPlane, split_access: AgentAccess
) -> AsyncIterator[tuple[ClusterView, ClusterView]]:
    api = await admin_api(k8s.admin_kubeconfig)
    yield ClusterView(api, split_access.namespace), ClusterView(api, split_access.uis)
    await api.close()


@pytest_asyncio.fixture
async def ui_ingress(
    k8s: ControlPlane, views: tuple[ClusterView, ClusterView]
) -> AsyncIterator[StandInIngress]:
    _agents, uis = views
    pki = k8s.work / "pki"
    async with (
        StandInKubelet(uis.api, uis.ns) as kubelet,
        StandInIngress(kubelet, pki / "ingress.crt", pki / "ingress.key") as ingress,
    ):
        yield ingress


async def test_the_agent_runs_with_its_uis_in_a_namespace_of_their_own(
    k8s: ControlPlane, split_access: AgentAccess, views: tuple[ClusterView, ClusterView],
    ui_ingress: StandInIngress, tmp_path: Path,
) -> None:  # fmt: skip
    agents, uis = views
    settings = {**agent_settings(tmp_path, split_access), "ui_namespace": split_access.uis}
    orphan = instance("orphan-split")
    stray = objects.deployment(orphan, KubeSettings(namespace=uis.ns), "x", None, False)
    await uis.apps.create_namespaced_deployment(uis.ns, stray)  # type: ignore[arg-type]
    ledger = SqlLedger(Settings(state_dir=Path(settings["state_dir"])).db_url)
    try:
        async with agent_process(k8s, tmp_path, settings, ui_ingress, "split") as agent:

            async def orphan_removed() -> bool:
                return "Deployment" not in await uis.of_instance(orphan.name)

            await until("the reconciler removes the stray UI", orphan_removed)
            await ledger.submit(VisRequest("split", source=SOURCE.format("split")),
                                datetime.now(UTC))  # fmt: skip
            ready = await phase_of(ledger, "split", agent, {Phase.READY, Phase.FAILED})
            assert ready.phase is Phase.READY, ready.reason
            assert ui_ingress.hits.get(ready.name, 0) >= 1, ui_ingress.hits
            assert ready.handle["namespace"] == uis.ns
            assert set(await uis.of_instance(ready.name)) >= {"Deployment", "Secret", "Pod"}
            assert await agents.of_instance(ready.name) == {}
            (lease,) = await leases(agents)
            assert lease["spec"]["holderIdentity"]
            assert await leases(uis) == []

            now = datetime.now(UTC)
            await ledger.set_expiry(ready.key, now, now)  # the reaper ends it
            done = await phase_of(ledger, "split", agent, {Phase.EXPIRED, Phase.FAILED})
            assert done.phase is Phase.EXPIRED, done.reason

            async def gone() -> bool:
                return await uis.of_instance(ready.name) == {}

            await until("every object of the ended UI is gone", gone)
            agent.check_running()
            # The API server's refusals say "forbidden": no call outside what the Roles allow.
            assert "forbidden" not in agent.log.read_text().lower(), agent.log_tail()
    finally:
        await ledger.close()
