"""Standby UI pods (issue 18, experimental) against a real kube-apiserver, controller-manager
and scheduler, as conf/'s ServiceAccount with OpenShift's OwnerReferencesPermissionEnforcement:
the objects, labels, the resourceVersion-guarded claim (a real 409 for the loser),
ownerReferences and the real garbage collector. No kubelet: pods never run, the stand-in
kubelet marks them Ready and the pod's side of the hand-over is a stand-in."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
import yaml

from idds_vis.deploy.kubernetes import standby as sb
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance
from tests.real_k8s.cluster_view import ClusterView, owner_uids, until
from tests.real_k8s.conftest import CONF, AgentAccess
from tests.real_k8s.control_plane import INGRESS_HOST, ControlPlane
from tests.real_k8s.stand_ins import StandInKubelet, admin_api
from tests.real_k8s.test_deployer import CREDENTIALS
from tests.real_k8s.test_deployer import instance as any_instance


def _credentials(source: str) -> dict[str, str] | None:
    """Credentials for S3 sources only: a source with some never goes to a standby pod."""
    return CREDENTIALS if source.startswith("s3:") else None


class Agent:
    def __init__(self, access: AgentAccess, handed: dict[str, dict[str, Any]]) -> None:
        self.kube = KubeClient(str(access.kubeconfig), call_timeout=10, retry_budget=10)
        ks = KubeSettings(namespace=access.namespace, public_host=INGRESS_HOST)

        async def hand_over(pod: dict[str, Any], body: dict[str, Any], secret: str) -> None:
            assert secret and secret not in str(pod)
            handed[pod["metadata"]["name"]] = body

        self.pool = sb.StandbyPods(ks, self.kube, size=1, max_age=3600, hand_over=hand_over)
        self.deployer = KubernetesDeployer(ks, self.kube, watch_silence=5, standby=self.pool,
                                           secrets_for=_credentials)  # fmt: skip

    async def one_idle(self) -> list[dict[str, Any]]:
        await until("a Ready standby pod", self._one_idle)
        return await self.pool.idle()

    async def _one_idle(self) -> bool:
        return len(await self.pool.idle()) == 1


def instance(task_id: str) -> Instance:
    """A request whose source needs no credential: only such go to a standby pod."""
    source = f"https://bigpanda.example/{task_id}.tgz?workloadid=4242"
    return dataclasses.replace(any_instance(task_id), source=source)


@pytest_asyncio.fixture
async def view(k8s: ControlPlane, agent_access: AgentAccess) -> AsyncIterator[ClusterView]:
    api = await admin_api(k8s.admin_kubeconfig)
    yield ClusterView(api, agent_access.namespace)
    await api.close()


def apply_standby_role(k8s: ControlPlane, namespace: str) -> None:
    """conf/standby/role.yaml (opt-in, on top of conf/'s Roles), moved to the test's namespace."""
    docs = [d for d in yaml.safe_load_all((CONF / "standby" / "role.yaml").read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": docs}))  # fmt: skip


async def test_claim_race_ownership_and_garbage_collection(
    k8s: ControlPlane, view: ClusterView, agent_access: AgentAccess, kubelet: StandInKubelet
) -> None:
    apply_standby_role(k8s, agent_access.namespace)
    handed: dict[str, dict[str, Any]] = {}
    one, two = Agent(agent_access, handed), Agent(agent_access, handed)
    try:
        # A bare pod is refused (403) until the namespace's "default" ServiceAccount exists,
        # which the token controller makes moments after the namespace; the pool's refill
        # loop retries such a failure with backoff, this test waits for it instead.
        await until("the default ServiceAccount", lambda: _has_default_account(view))
        await one.pool.refill()
        (idle,) = await one.one_idle()
        name = idle["metadata"]["name"]
        root = await view.core.read_namespaced_config_map(sb.root_name("mlflow"), view.ns)
        assert owner_uids(idle) == [root.metadata.uid]
        secret = view.api.sanitize_for_serialization(
            await view.core.read_namespaced_secret(name, view.ns))  # fmt: skip
        assert owner_uids(secret) == [idle["metadata"]["uid"]]
        env = idle["spec"]["containers"][0]["env"]
        assert {"name": "IDDS_VIS_POOL_SECRET",
                "valueFrom": {"secretKeyRef": {"name": name, "key": "IDDS_VIS_POOL_SECRET"}}
                } in env  # fmt: skip

        # Agent two listed the pod too, but agent one claims it first: two's patch carries
        # the old resourceVersion, the API server answers 409, and two's request is cold.
        stale = await two.pool.idle()
        won = instance("sb-won")
        dep = await one.deployer.deploy(won, None)
        assert dep.handle["standby_pod"] == name and set(handed) == {name}

        async def listed_before() -> list[dict[str, Any]]:
            return stale

        two.pool.idle = listed_before  # type: ignore[method-assign]
        lost = instance("sb-lost")
        cold = await two.deployer.deploy(lost, None)
        assert "standby_pod" not in cold.handle and two.pool.misses == 1
        lost_root = await view.apps.read_namespaced_deployment(lost.name, view.ns)
        assert lost_root.spec.replicas == 1

        # The claimed pod: the instance's labels, owned by its root only (the real Deployment
        # controller starts no pod of its own at replicas 0, nor adopts this one).
        found = await view.of_instance(won.name)
        (pod,) = found["Pod"]
        root_uid = dep.handle["uid"]
        assert pod["metadata"]["name"] == name and owner_uids(pod) == [root_uid]
        assert pod["metadata"]["ownerReferences"][0]["controller"] is False
        await one.deployer.wait_started(won, dep, timeout=60)
        await until("the claimed pod makes its root healthy", lambda: _healthy(one, won.name))
        (pod,) = (await view.of_instance(won.name))["Pod"]
        assert owner_uids(pod) == [root_uid], "adopted by a ReplicaSet"

        # Shutdown: the standby root goes, and the collector takes idle pods, their Secrets
        # and the standby policy; the claimed pod stays with its UI.
        await one.pool.refill()
        (second,) = await one.one_idle()
        await one.deployer.close()
        await until("the idle pod collected", lambda: _gone(view, second["metadata"]["name"]))
        await until("the standby policy collected", lambda: _no_policy(view))
        (pod,) = (await view.of_instance(won.name))["Pod"]
        assert pod["metadata"]["name"] == name

        # Teardown: the root's deletion takes the claimed pod and (through it) its Secret.
        await one.deployer.delete(won)
        await until("the claimed pod and its Secret collected", lambda: _gone(view, name))
        await until("everything of the UI gone", lambda: one.deployer.gone(won.name))
        await two.deployer.delete(lost)
        await until("the cold UI gone", lambda: two.deployer.gone(lost.name))
    finally:
        await one.kube.close()
        await two.kube.close()


async def _healthy(agent: Agent, name: str) -> bool:
    return any(ui.name == name and ui.healthy for ui in await agent.deployer.running())


async def _gone(view: ClusterView, name: str) -> bool:
    pods = await view.core.list_namespaced_pod(view.ns, field_selector=f"metadata.name={name}")
    found = await view.core.list_namespaced_secret(view.ns, field_selector=f"metadata.name={name}")
    return not pods.items and not found.items


async def _no_policy(view: ClusterView) -> bool:
    listed = await view.net.list_namespaced_network_policy(view.ns)
    return not [p for p in listed.items if p.metadata.name == sb.root_name("mlflow")]


async def _has_default_account(view: ClusterView) -> bool:
    listed = await view.core.list_namespaced_service_account(view.ns)
    return any(sa.metadata.name == "default" for sa in listed.items)
