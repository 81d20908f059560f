"""The Kubernetes deployer against a real kube-apiserver, controller-manager and scheduler, as
conf/'s ServiceAccount (a TokenRequest token, RBAC from conf/role.yaml), with OpenShift's
OwnerReferencesPermissionEnforcement admission on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from tests.real_k8s.cluster_view import ClusterView, owner_uids, until
from tests.real_k8s.conftest import AgentAccess
from tests.real_k8s.control_plane import INGRESS_HOST, NODE, ControlPlane
from tests.real_k8s.stand_ins import StandInKubelet, admin_api

NOW = datetime.now(UTC).replace(microsecond=0)
KCM = "kube-controller-manager"
CREDENTIALS = {"IDDS_VIS_TEST_CREDENTIAL": "not-a-real-secret"}
DEPENDENTS = ("Secret", "Service", "Ingress", "NetworkPolicy")


def instance(task_id: str) -> Instance:
    return Instance(task_id=task_id, tool="mlflow", name=InstanceKey(task_id).name,
                    phase=Phase.DEPLOYING, source=f"https://bigpanda.example/x?workloadid={task_id}",
                    ttl=timedelta(hours=24), created_at=NOW, updated_at=NOW,
                    expires_at=NOW + timedelta(hours=24))  # fmt: skip


@pytest_asyncio.fixture
async def view(k8s: ControlPlane, agent_access: AgentAccess) -> AsyncIterator[ClusterView]:
    api = await admin_api(k8s.admin_kubeconfig)
    yield ClusterView(api, agent_access.namespace)
    await api.close()


@pytest_asyncio.fixture
async def deployer(agent_access: AgentAccess) -> AsyncIterator[KubernetesDeployer]:
    """As the ServiceAccount; a Secret with each UI (the source needs a credential)."""
    kube = KubeClient(str(agent_access.kubeconfig), call_timeout=10, retry_budget=10)
    settings = KubeSettings(namespace=agent_access.namespace, public_host=INGRESS_HOST)
    yield KubernetesDeployer(settings, kube, watch_silence=5, secrets_for=lambda _s: CREDENTIALS)
    await kube.close()


def _kinds(found: dict[str, list[dict[str, Any]]]) -> set[str]:
    return set(found)


async def test_deploy_adopt_and_teardown_as_the_service_account(
    k8s: ControlPlane, view: ClusterView, deployer: KubernetesDeployer, kubelet: StandInKubelet
) -> None:
    inst = instance("real-1")
    # 403 here without `update` on deployments/finalizers: every dependent sets
    # blockOwnerDeletion, which OwnerReferencesPermissionEnforcement checks.
    deployment = await deployer.deploy(inst, None)
    root_uid = deployment.handle["uid"]
    found = await view.of_instance(inst.name)
    for kind in DEPENDENTS:
        (obj,) = found[kind]
        assert owner_uids(obj) == [root_uid], kind
        assert obj["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    # Scheduled by kube-scheduler on the fake Node, made Ready by the stand-in kubelet, seen
    # through the deployer's own list + watch.
    await deployer.wait_started(inst, deployment, timeout=60)
    assert kubelet.serving(inst.name)

    again = await deployer.deploy(inst, None)  # a restart mid-deploy: adopt, not conflict
    assert again.handle["uid"] == root_uid
    (running,) = await deployer.running()
    await until("the Deployment controller counts the ready pod",
                lambda: _healthy(deployer, inst.name))  # fmt: skip
    assert running.name == inst.name

    # With the garbage collector paused, what the root owned stays: gone() must say so even
    # when only the Secret, the ReplicaSet and the Pod are left.
    k8s.pause(KCM)
    try:
        await deployer.delete(inst)
        await view.core.delete_namespaced_service(inst.name, view.ns)
        await view.net.delete_namespaced_ingress(inst.name, view.ns)
        await view.net.delete_namespaced_network_policy(inst.name, view.ns)
        left = _kinds(await view.of_instance(inst.name))
        assert {"Secret", "ReplicaSet", "Pod"} <= left, left
        assert not await deployer.gone(inst.name), f"gone() while {sorted(left)} remain"
    finally:
        k8s.resume(KCM)
    await until("the deployer sees everything gone", lambda: deployer.gone(inst.name))
    assert await view.of_instance(inst.name) == {}, "gone() said True too early"
    await deployer.delete(inst)  # deleting what is gone is success


async def _healthy(deployer: KubernetesDeployer, name: str) -> bool:
    return any(ui.name == name and ui.healthy for ui in await deployer.running())


async def test_redeploy_while_the_garbage_collector_lags_keeps_every_dependent(
    k8s: ControlPlane, view: ClusterView, deployer: KubernetesDeployer, kubelet: StandInKubelet
) -> None:
    """Teardown and a new request for the same task at once: the old dependents are still
    there (owned by the deleted root) when the new root is created. Adopting them as they
    are lets the garbage collector delete them afterwards, leaving the new UI unreachable."""
    inst = instance("lag-1")
    first = await deployer.deploy(inst, None)
    await deployer.wait_started(inst, first, timeout=60)
    old_uid = first.handle["uid"]

    k8s.pause(KCM)
    try:
        await deployer.delete(inst)
        redeploy = asyncio.create_task(deployer.deploy(inst, None))
        # The window of the lag, not a synchronisation: a deployer that waits for the garbage
        # collector finishes once it resumes, one that does not finishes within it; both are
        # checked the same way below.
        await asyncio.wait({redeploy}, timeout=5)
    finally:
        k8s.resume(KCM)
    second = await redeploy
    new_uid = second.handle["uid"]
    assert new_uid != old_uid

    async def old_owner_forgotten() -> bool:
        return await view.owned_by(old_uid) == []

    await until("nothing refers to the deleted root any more", old_owner_forgotten)
    found = await view.of_instance(inst.name)
    missing = [kind for kind in DEPENDENTS if kind not in found]
    assert missing == [], f"the new UI lost its {missing} to the garbage collector"
    for kind in DEPENDENTS:
        assert [owner_uids(obj) for obj in found[kind]] == [[new_uid]], kind
    await deployer.wait_started(inst, second, timeout=60)
    await deployer.delete(inst)
    await until("the redeployed UI is gone", lambda: deployer.gone(inst.name))


async def test_an_expired_continue_token_falls_back_to_a_full_list(
    k8s: ControlPlane, view: ClusterView, deployer: KubernetesDeployer, agent_access: AgentAccess
) -> None:
    """With --etcd-compaction-interval=5s, the second page's continue token expires while the
    reconciler is between pages: the real server answers 410, the deployer lists again."""
    names = []
    for task in ("page-1", "page-2", "page-3"):
        inst = instance(task)
        body = objects.deployment(inst, deployer.ks, "x", None, False)
        body["spec"]["replicas"] = 0  # listed, never scheduled: no pods needed here
        await view.apps.create_namespaced_deployment(view.ns, body)  # type: ignore[arg-type]
        names.append(inst.name)
    deployer.list_chunk = 1
    real_page = deployer._list_page
    expired: list[int] = []

    async def page_after_compaction(*args: Any) -> Any:
        token = args[1]  # (what lists, the continue token, the page size)
        if token is not None and not expired:
            await _wait_until_expired(view, token)
        try:
            return await real_page(*args)
        except ApiException as exc:
            expired.append(int(exc.status or 0))
            raise

    deployer._list_page = page_after_compaction  # type: ignore[method-assign,assignment]
    listed = await deployer.running()
    assert expired == [410]
    assert sorted(ui.name for ui in listed) == sorted(names)


async def _wait_until_expired(view: ClusterView, token: str) -> None:
    """Write (so the history moves on) until the compaction has passed the token's version."""
    note = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "history"}}
    await view.core.create_namespaced_config_map(view.ns, note)  # type: ignore[arg-type]
    tick = 0

    async def token_expired() -> bool:
        nonlocal tick
        tick += 1
        await view.core.patch_namespaced_config_map("history", view.ns, {"data": {"t": str(tick)}})
        try:
            await view.apps.list_namespaced_deployment(view.ns, limit=1, _continue=token)
        except ApiException as exc:
            if exc.status == 410:
                return True
            raise
        return False

    await until("the continue token expires", token_expired)


async def test_a_pod_waiting_for_a_node_is_not_a_failure(
    k8s: ControlPlane, view: ClusterView, deployer: KubernetesDeployer, kubelet: StandInKubelet
) -> None:
    """kube-scheduler's FailedScheduling (here: the only Node cordoned) is retried by the
    scheduler; a node may come (autoscaler, drain ending), so the deployer keeps waiting until
    its start deadline instead of failing at the first such event."""
    inst = instance("room-1")
    await asyncio.to_thread(k8s.kubectl, "cordon", NODE)
    try:
        deployment = await deployer.deploy(inst, None)
        started = asyncio.create_task(deployer.wait_started(inst, deployment, timeout=90))

        async def refused() -> bool:
            if started.done():
                return True  # a deployer that gave up: its error is raised below
            events = await view.core.list_namespaced_event(
                view.ns, field_selector="reason=FailedScheduling")  # fmt: skip
            return any(e.involved_object.name.startswith(inst.name) for e in events.items)

        await until("kube-scheduler reports FailedScheduling", refused)
        assert not started.done(), started.result()
    finally:
        await asyncio.to_thread(k8s.kubectl, "uncordon", NODE)
    await started  # scheduled once the node is back, then Ready
    assert kubelet.serving(inst.name)

