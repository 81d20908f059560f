"""The Kubernetes deployer through kubernetes-asyncio, against the strict API emulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idds_vis.agent.service import Agent
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Deployment, Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_deployer, build_ledger
from tests.fakes import FakeProbe, FakeStager, SystemClock, wait_for_all, wait_for_phase
from tests.k8s_emulator.resources import resolve

NS = "vis"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def instance(task_id: str) -> Instance:
    return Instance(task_id=task_id, tool="mlflow", name=InstanceKey(task_id).name,
                    phase=Phase.DEPLOYING, source=f"https://bigpanda.example/x?workloadid={task_id}",
                    ttl=timedelta(hours=24), created_at=NOW, updated_at=NOW,
                    expires_at=NOW + timedelta(hours=24))  # fmt: skip


def kube_agent(tmp_path: Path, kubeconfig: Path, image: str = "idds-vis-ui:0.1.0") -> Agent:
    """The real agent on the Kubernetes deployer. No ingress controller runs here, so the
    public-URL probe is the one part stood in for (and the pod stages its own data)."""
    settings = Settings(state_dir=tmp_path / "state", deployer="kubernetes", namespace=NS,
                        kubeconfig=str(kubeconfig), ui_image=image)  # fmt: skip
    return Agent(ledger=build_ledger(settings), stager=FakeStager(),
                 deployer=build_deployer(settings), probe=FakeProbe(), clock=SystemClock(),
                 poll_interval=0.05)  # fmt: skip


async def test_deploy_waits_for_ready_and_delete_leaves_nothing(emu, deployer) -> None:
    inst = instance("1001")
    deployment = await deployer.deploy(inst, None)
    assert deployment.url == f"https://vis.example.org{inst.prefix}/"
    root = emu.get("deployments", inst.name, NS)
    assert root is not None
    for kind in ("services", "ingresses", "networkpolicies"):
        obj = emu.get(kind, inst.name, NS)
        assert obj is not None, kind
        assert obj["metadata"]["ownerReferences"][0]["uid"] == root["metadata"]["uid"]
    await deployer.wait_started(inst, deployment, timeout=60)
    (running,) = await deployer.running()
    assert running.name == inst.name and running.healthy
    await deployer.delete(inst)
    assert await deployer.gone(inst.name)
    assert emu.list("pods", NS) == []
    await deployer.delete(inst)  # deleting what is gone is success


async def test_deploy_twice_adopts_and_a_stranger_is_a_conflict(emu, deployer) -> None:
    inst = instance("1002")
    first = await deployer.deploy(inst, None)
    again = await deployer.deploy(inst, None)
    assert again.handle["uid"] == first.handle["uid"]
    assert len(emu.list("deployments", NS)) == 1
    stranger = instance("1003")
    emu.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": stranger.name},
                "spec": {"ports": [{"port": 80}]}}, NS)  # fmt: skip
    with pytest.raises(DeployError, match="not managed by idds-vis"):
        await deployer.deploy(stranger, None)


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("image-pull-backoff", "image cannot be pulled"),
        ("oom", "ran out of memory"),
        ("crash", "keeps crashing"),
    ],
)
async def test_pod_failures_become_readable_reasons(emu, deployer, behaviour, reason) -> None:
    inst = instance(f"fail-{behaviour}")
    emu.set_behaviour(behaviour, name=inst.name)
    deployment = await deployer.deploy(inst, None)
    with pytest.raises(DeployError, match=reason):
        await deployer.wait_started(inst, deployment, timeout=60)


async def test_quota_exceeded_is_reported(emu, deployer) -> None:
    emu.quota_exceeded = True
    inst = instance("quota-1")
    deployment = await deployer.deploy(inst, None)
    with pytest.raises(DeployError, match="quota exceeded"):
        await deployer.wait_started(inst, deployment, timeout=60)


async def test_start_deadline_fails_with_a_reason(emu, deployer) -> None:
    inst = instance("slow-1")
    emu.set_behaviour("never-ready", name=inst.name)
    deployment = await deployer.deploy(inst, None)
    with pytest.raises(DeployError, match="did not become ready within 3 s"):
        await deployer.wait_started(inst, deployment, timeout=3)


async def test_transient_api_errors_are_retried(emu, deployer) -> None:
    emu.inject_failure(503, verb="create", resource="deployments", times=2)
    inst = instance("retry-1")
    await deployer.deploy(inst, None)
    assert emu.get("deployments", inst.name, NS) is not None
    assert emu.request_count("create", "deployments") == 3


async def test_the_agent_drives_kubernetes_uis_from_request_to_expired(emu, tmp_path) -> None:

    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    agent = kube_agent(tmp_path, kubeconfig)
    deployer = agent.deployer
    assert isinstance(deployer, KubernetesDeployer)
    events = agent.events.subscribe()
    await agent.start()
    try:
        req = VisRequest("k8s-1", source="https://bigpanda.example/x?workloadid=1")
        await agent.submit(req)
        ready = await wait_for_phase(agent, events, "k8s-1", {Phase.READY, Phase.FAILED})
        assert ready.phase is Phase.READY, ready.reason
        root = emu.get("deployments", ready.name, NS)
        assert root is not None
        notes = root["metadata"]["annotations"]
        assert ready.expires_at is not None
        assert notes["idds-vis/expires-at"] == ready.expires_at.isoformat(timespec="seconds")
        longer = await agent.extend(req.key, timedelta(hours=2))
        assert longer.expires_at is not None
        notes = emu.get("deployments", ready.name, NS)["metadata"]["annotations"]
        assert notes["janitor/expires"] == longer.expires_at.isoformat(timespec="seconds")
        await agent.teardown(req.key)
        await wait_for_phase(agent, events, "k8s-1", {Phase.EXPIRED})
        assert await deployer.gone(ready.name)
    finally:
        await agent.stop()
        await agent.ledger.close()
        await deployer.kube.close()  # type: ignore[attr-defined]


async def test_a_new_ui_image_rolls_running_instances(emu, tmp_path) -> None:

    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)

    first = kube_agent(tmp_path, kubeconfig)
    events = first.events.subscribe()
    await first.start()
    req = VisRequest("roll-1", source="https://bigpanda.example/x?workloadid=2")
    await first.submit(req)
    ready = await wait_for_phase(first, events, "roll-1", {Phase.READY, Phase.FAILED})
    assert ready.phase is Phase.READY, ready.reason
    (old_pod,) = emu.list("pods", NS)
    await first.stop()
    await first.ledger.close()

    second = kube_agent(tmp_path, kubeconfig, "idds-vis-ui:0.2.0")
    report = await second.start()
    try:
        assert report.rolled == [ready.name] and report.adopted == [ready.name]
        dep = emu.get("deployments", ready.name, NS)
        (ui,) = dep["spec"]["template"]["spec"]["containers"]
        assert ui["image"] == "idds-vis-ui:0.2.0"
        assert "--prefix" in ui["args"]  # a strategic merge: the rest of the container is kept
        deployer = second.deployer
        assert isinstance(deployer, KubernetesDeployer)
        await deployer.wait_started(ready, Deployment(url=ready.url or "", health_url=""), 60)
        pods = emu.list("pods", NS)
        assert [p["spec"]["containers"][0]["image"] for p in pods] == ["idds-vis-ui:0.2.0"]
        assert old_pod["metadata"]["name"] not in [p["metadata"]["name"] for p in pods]
        (current,) = await deployer.running()
        assert await deployer.roll_to_current(current) is False  # nothing left to roll
    finally:
        await second.stop()
        await second.ledger.close()
        await second.deployer.kube.close()  # type: ignore[attr-defined]


async def test_reconcile_on_kubernetes_removes_orphans_and_restarts_missing(emu, tmp_path) -> None:

    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)

    first = kube_agent(tmp_path, kubeconfig)
    events = first.events.subscribe()
    await first.start()
    for task in ("keep", "lost"):
        await first.submit(VisRequest(task, source="https://bigpanda.example/x"))
    done = await wait_for_all(events, {"keep", "lost"}, {Phase.READY, Phase.FAILED})
    assert {i.phase for i in done.values()} == {Phase.READY}
    await first.stop()
    await first.ledger.close()
    await first.deployer.kube.close()  # type: ignore[attr-defined]

    # While no agent runs: one UI is deleted by hand, and a stray one appears with our label.
    lost = done["lost"].name
    emu.api.delete(resolve("deployments"), NS, lost, {"propagationPolicy": "Background"})
    orphan = instance("orphan-1")
    emu.create(objects.deployment(orphan, KubeSettings(namespace=NS), "x", None, False), NS)

    second = kube_agent(tmp_path, kubeconfig)
    events2 = second.events.subscribe()
    report = await second.start()
    try:
        assert report.removed_orphans == [orphan.name]
        assert report.adopted == [done["keep"].name]
        assert report.restarted == [done["lost"].name]
        again = await wait_for_all(events2, {"lost"}, {Phase.READY, Phase.FAILED})
        assert again["lost"].phase is Phase.READY
        names = sorted(d["metadata"]["name"] for d in emu.list("deployments", NS))
        assert names == sorted([done["keep"].name, done["lost"].name])
    finally:
        await second.stop()
        await second.ledger.close()
        await second.deployer.kube.close()  # type: ignore[attr-defined]


async def test_a_refusal_carries_the_servers_own_message(emu, deployer) -> None:
    """Not just "HTTP 403 Forbidden": what RBAC or admission said, so an operator can act."""
    said = ('services "x" is forbidden: User "system:serviceaccount:vis:idds-vis-agent" cannot '
            'create resource "services" in API group "" in the namespace "vis"')  # fmt: skip
    emu.inject_failure(403, verb="create", resource="services", message=said)
    inst = instance("refused-1")
    with pytest.raises(DeployError) as caught:
        await deployer.deploy(inst, None)
    assert str(caught.value) == (
        f"the cluster refused Service {NS}/{inst.name}: HTTP 403 Forbidden: {said}"
    )


async def test_no_node_yet_is_waited_for_until_the_deadline_with_the_last_reason(
    emu, deployer
) -> None:
    """With a cluster autoscaler "0/N nodes are available" usually passes: not a failure."""
    inst = instance("unschedulable-1")
    emu.set_behaviour("unschedulable", name=inst.name)
    deployment = await deployer.deploy(inst, None)
    with pytest.raises(DeployError) as caught:
        await deployer.wait_started(inst, deployment, timeout=3)
    assert str(caught.value).startswith(
        "the UI did not become ready within 3 s: no node can run the UI: 0/1 nodes are available"
    )


async def test_a_node_that_comes_later_makes_the_ui_ready(emu, deployer) -> None:
    inst = instance("unschedulable-2")
    emu.set_behaviour("unschedulable", name=inst.name)
    deployment = await deployer.deploy(inst, None)
    started = asyncio.create_task(deployer.wait_started(inst, deployment, timeout=60))
    deadline = asyncio.get_running_loop().time() + 30
    # Until the deployer has read the pod's FailedScheduling event (and not failed on it).
    while not started.done() and emu.request_count("list", "events") < 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert not started.done(), started
    emu.set_behaviour("ready", name=inst.name)  # the autoscaler added a node
    await started


async def test_gone_waits_for_the_secret_replicasets_and_pods_too(emu, deployer) -> None:
    """Teardown says gone only when nothing of the UI is left, terminating pods included."""
    inst = instance("gone-1")
    await deployer.wait_started(inst, await deployer.deploy(inst, None), timeout=60)
    emu.pause_gc()
    await deployer.delete(inst)
    for plural in ("services", "ingresses", "networkpolicies"):
        emu.api.delete(resolve(plural), NS, inst.name, {})
    assert not await deployer.gone(inst.name)  # the Secret and the pod are left
    emu.api.delete(resolve("secrets"), NS, inst.name, {})
    assert not await deployer.gone(inst.name)  # the pod is left
    (pod,) = emu.list("pods", NS)
    emu.api.delete(resolve("pods"), NS, pod["metadata"]["name"], {})
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": f"{inst.name}-5d4f8", "labels": objects.labels(inst)},
          "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": inst.name}},
                   "template": {"metadata": {"labels": objects.labels(inst)},
                                "spec": {"containers": [{"name": "ui", "image": "x"}]}}}}
    emu.create(rs, NS)  # as a real cluster's Deployment controller leaves them
    assert not await deployer.gone(inst.name)
    emu.api.delete(resolve("replicasets"), NS, rs["metadata"]["name"], {})
    assert await deployer.gone(inst.name)
