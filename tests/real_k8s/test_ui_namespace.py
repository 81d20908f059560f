"""UIs in a namespace of their own (issue 17, least privilege), on the real control plane: the
deployer runs with conf/'s ServiceAccount token (not the admin's), its Roles moved to a fresh
agent namespace and UI namespace. Every object of a UI lands in the UIs' namespace, owned by its
root there (owner references never cross namespaces), the garbage collector removes them after
the root's deletion; readiness is followed there; the Lease works in the agent's namespace
only; and the same token gets 403 for any Secret of the agent's namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.agent.clock import SystemClock
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.lease import KubeLeaseStore
from idds_vis.deploy.kubernetes.settings import KubeSettings
from tests.real_k8s.cluster_view import ClusterView, owner_uids, until
from tests.real_k8s.conftest import AgentAccess
from tests.real_k8s.control_plane import INGRESS_HOST, ControlPlane
from tests.real_k8s.stand_ins import StandInKubelet, admin_api
from tests.real_k8s.test_deployer import CREDENTIALS, DEPENDENTS, instance


@pytest_asyncio.fixture
async def kube(split_access: AgentAccess) -> AsyncIterator[KubeClient]:
    kube = KubeClient(str(split_access.kubeconfig), call_timeout=10, retry_budget=10)
    yield kube
    await kube.close()


async def test_a_ui_lives_in_the_ui_namespace_as_the_service_account(
    k8s: ControlPlane, split_access: AgentAccess, kube: KubeClient
) -> None:
    agent_ns, ui_ns = split_access.namespace, split_access.uis
    assert agent_ns != ui_ns
    settings = KubeSettings(namespace=ui_ns, public_host=INGRESS_HOST)
    deployer = KubernetesDeployer(settings, kube, watch_silence=5,
                                  secrets_for=lambda _s: CREDENTIALS)  # fmt: skip
    api = await admin_api(k8s.admin_kubeconfig)
    uis, agents = ClusterView(api, ui_ns), ClusterView(api, agent_ns)
    kubelet = StandInKubelet(api, ui_ns)  # pods there become Ready, and their deletion final
    try:
        await kubelet.__aenter__()
        inst = instance("split-1")
        deployment = await deployer.deploy(inst, None)
        assert deployment.handle["namespace"] == ui_ns
        root_uid = deployment.handle["uid"]
        found = await uis.of_instance(inst.name)
        for kind in DEPENDENTS:
            (obj,) = found[kind]
            assert obj["metadata"]["namespace"] == ui_ns, kind
            assert owner_uids(obj) == [root_uid], kind
        assert await agents.of_instance(inst.name) == {}, "a UI object in the agent's namespace"
        # Readiness through the deployer's own list + watch of pods and events, there.
        await deployer.wait_started(inst, deployment, timeout=60)
        assert kubelet.serving(inst.name)
        again = await deployer.deploy(inst, None)  # a restart: adopted, in the UIs' namespace
        assert again.handle["uid"] == root_uid
        assert [ui.name for ui in await deployer.running()] == [inst.name]

        # The leader Lease: in the agent's namespace, and only there.
        lease = KubeLeaseStore(kube, agent_ns, SystemClock())
        assert await lease.try_acquire("idds-vis-leader", "replica-a", 15)
        held = await client.CoordinationV1Api(api).read_namespaced_lease(
            "idds-vis-leader", agent_ns
        )
        assert held.spec.holder_identity == "replica-a"
        with pytest.raises(ApiException) as refused:
            await KubeLeaseStore(kube, ui_ns, SystemClock()).try_acquire("x", "replica-a", 15)
        assert refused.value.status == 403

        # The agent's token reads no Secret of its own namespace (the UIs' are its only ones).
        core = client.CoreV1Api(await kube.api())
        for call in (core.list_namespaced_secret(agent_ns),
                     core.read_namespaced_secret("anything", agent_ns)):  # fmt: skip
            with pytest.raises(ApiException) as denied:
                await call
            assert denied.value.status == 403

        # Teardown: the root only; the real garbage collector removes what it owned.
        await deployer.delete(inst)
        await until("the UI's objects are gone", lambda: deployer.gone(inst.name))
        assert await uis.of_instance(inst.name) == {}
        assert await deployer.running() == []
    finally:
        await kubelet.__aexit__(None, None, None)
        await api.close()
