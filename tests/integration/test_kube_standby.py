"""Standby UI pods on Kubernetes (issue 18, experimental), against the API emulator: a request
claims an idle pod (resourceVersion-guarded label patch, owner reference to the instance's
root, one authenticated hand-over) and the pool refills; a pod that served A is never given B;
version change and age recycle idle pods; a restarted agent finds idle and claimed pods; a lost
claim race and a refused hand-over start cold; teardown and shutdown leave nothing behind.

The pod side of the hand-over is a stand-in here (``HandOvers``): it checks the secret against
the pod's Secret and accepts one hand-over per pod, as the member does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from idds_vis.deploy.kubernetes import standby as sb
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.pool import SECRET_ENV
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Instance
from tests.integration.test_kube_deployer import NS
from tests.integration.test_kube_deployer import instance as any_instance
from tests.k8s_emulator import KubeEmulator

HANG_GUARD = 60.0


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll the emulator's controller (another task's state) until ``check`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not await check():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


class HandOvers:
    """The pods' side: one hand-over per pod, carrying that pod's secret (from its Secret)."""

    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu
        self.done: dict[str, dict[str, Any]] = {}  # pod -> body
        self.refuse = False

    async def __call__(self, pod: dict[str, Any], body: dict[str, Any], secret: str) -> None:
        name = pod["metadata"]["name"]
        stored = self.emu.get("secrets", name, pod["metadata"]["namespace"])
        assert stored is not None
        expected = base64.b64decode(stored["data"][SECRET_ENV]).decode()
        if secret != expected:
            raise DeployError("the standby pod refused its hand-over (HTTP 403)")
        if self.refuse or name in self.done:
            raise DeployError("the standby pod refused its hand-over (HTTP 409)")
        self.done[name] = body


def instance(task_id: str) -> Instance:
    """A request whose source needs no credential (a query value other than a numeric id
    may be one, and such sources never go to a standby pod)."""
    source = f"https://bigpanda.example/{task_id}.tgz?workloadid=4242"
    return dataclasses.replace(any_instance(task_id), source=source)


class Observed:
    def __init__(self) -> None:
        self.size: int | None = None
        self.hits = self.misses = self.refills = 0

    def pool_size(self, tool: str, size: int) -> None:
        self.size = size

    def pool_hit(self, tool: str) -> None:
        self.hits += 1

    def pool_miss(self, tool: str) -> None:
        self.misses += 1

    def pool_refilled(self, tool: str, seconds: float) -> None:
        self.refills += 1


class Agent:
    """One agent's view: its client, standby pool and deployer."""

    def __init__(self, kubeconfig: Path, hand_overs: HandOvers, **pool: Any) -> None:
        self.kube = KubeClient(str(kubeconfig), call_timeout=5, retry_budget=5)
        self.ks = KubeSettings(namespace=NS)
        self.observed = Observed()
        settings = {"size": 1, "max_age": 3600, **pool}
        self.pool = sb.StandbyPods(self.ks, self.kube, hand_over=hand_overs,
                                   observer=self.observed, **settings)  # fmt: skip
        self.deployer = KubernetesDeployer(self.ks, self.kube, watch_silence=2, standby=self.pool)

    async def refilled(self, idle: int = 1) -> list[dict[str, Any]]:
        await self.pool.refill()
        await until(f"{idle} standby pod(s) Ready", lambda: self._idle_is(idle))
        return await self.pool.idle()

    async def _idle_is(self, count: int) -> bool:
        return len(await self.pool.idle()) == count

    async def close(self) -> None:
        task, self.pool._task = self.pool._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.kube.close()


@pytest.fixture
async def emu() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
def hand_overs(emu: KubeEmulator) -> HandOvers:
    return HandOvers(emu)


@pytest.fixture
async def agent(emu: KubeEmulator, tmp_path: Path, hand_overs: HandOvers) -> AsyncIterator[Agent]:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    one = Agent(kubeconfig, hand_overs)
    yield one
    await one.close()


def pods_of(emu: KubeEmulator, name: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in emu.list("pods", NS, sb_instance(name)))


def sb_instance(name: str) -> str:
    return f"app.kubernetes.io/instance={name}"


async def test_a_request_claims_a_standby_pod_and_a_pod_serves_one_task_only(
    emu: KubeEmulator, agent: Agent, hand_overs: HandOvers
) -> None:
    (idle,) = await agent.refilled()
    first_pod = idle["metadata"]["name"]
    a, b = instance("standby-a"), instance("standby-b")
    dep_a = await agent.deployer.deploy(a, None)
    assert dep_a.handle["standby_pod"] == first_pod
    root_a = emu.get("deployments", a.name, NS)
    assert root_a is not None and root_a["spec"]["replicas"] == 0
    pod = emu.get("pods", first_pod, NS)
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert labels[sb_instance(a.name).split("=")[0]] == a.name
    assert sb.VERSION_LABEL not in labels and labels["app.kubernetes.io/component"] != "standby"
    (ref,) = pod["metadata"]["ownerReferences"]
    assert ref["uid"] == root_a["metadata"]["uid"] and ref["kind"] == "Deployment"
    assert ref["controller"] is False and ref["blockOwnerDeletion"] is True
    assert pods_of(emu, a.name) == [first_pod], "the root started a pod of its own"
    # One hand-over, with the source; the per-pod secret is nowhere in the pod's object.
    assert hand_overs.done[first_pod]["source"] == a.source
    assert hand_overs.done[first_pod]["prefix"] == a.prefix
    secret = base64.b64decode(emu.get("secrets", first_pod, NS)["data"][SECRET_ENV]).decode()
    assert secret not in str(pod)
    await agent.deployer.wait_started(a, dep_a, timeout=30)
    assert [ui.healthy for ui in await agent.deployer.running() if ui.name == a.name] == [True]
    assert (agent.observed.hits, agent.pool.hits) == (1, 1)

    # The pool refills; B gets the new pod, never A's.
    (second,) = await agent.refilled()
    assert second["metadata"]["name"] != first_pod
    dep_b = await agent.deployer.deploy(b, None)
    assert dep_b.handle["standby_pod"] == second["metadata"]["name"]
    assert pods_of(emu, b.name) == [second["metadata"]["name"]]
    assert set(hand_overs.done) == {first_pod, second["metadata"]["name"]}
    assert agent.observed.refills == 2

    # Teardown of A: its root goes and the garbage collector takes the claimed pod and its
    # Secret; B's pod stays.
    await agent.deployer.delete(a)
    await until("A gone", lambda: agent.deployer.gone(a.name))
    assert emu.get("pods", first_pod, NS) is None and emu.get("secrets", first_pod, NS) is None
    assert pods_of(emu, b.name) == [second["metadata"]["name"]]


async def test_an_empty_pool_a_lost_race_and_a_refused_hand_over_start_cold(
    emu: KubeEmulator, agent: Agent, hand_overs: HandOvers, tmp_path: Path
) -> None:
    # Empty pool: a cold Deployment with its own pod, a miss.
    cold = instance("standby-cold")
    dep = await agent.deployer.deploy(cold, None)
    assert "standby_pod" not in dep.handle
    assert emu.get("deployments", cold.name, NS)["spec"]["replicas"] == 1
    await agent.deployer.wait_started(cold, dep, timeout=30)
    assert agent.pool.misses == 1

    # Two agents race for the one idle pod: the other wins, this one's patch carries a stale
    # resourceVersion (409) and its request starts cold.
    stale = await agent.refilled()
    other = Agent(emu.write_kubeconfig(tmp_path / "other", NS), hand_overs)
    try:
        won = instance("standby-won")
        assert (await other.deployer.deploy(won, None)).handle["standby_pod"]

        async def listed_before_the_other_claimed() -> list[dict[str, Any]]:
            return stale

        agent.pool.idle = listed_before_the_other_claimed  # type: ignore[method-assign]
        lost = instance("standby-lost")
        dep_lost = await agent.deployer.deploy(lost, None)
        assert "standby_pod" not in dep_lost.handle
        assert emu.get("deployments", lost.name, NS)["spec"]["replicas"] == 1
        await agent.deployer.wait_started(lost, dep_lost, timeout=30)
        (pod,) = pods_of(emu, lost.name)
        assert pod != stale[0]["metadata"]["name"]
        assert pods_of(emu, won.name) == [stale[0]["metadata"]["name"]]
        assert agent.pool.misses == 2
        # An agent that only claimed (a replica that is not the leader) leaves the pool be.
        standing = {p["metadata"]["name"] for p in emu.list("pods", NS)}
        await other.deployer.close()
        assert {p["metadata"]["name"] for p in emu.list("pods", NS)} == standing
        assert emu.get("configmaps", sb.root_name("mlflow"), NS) is not None
    finally:
        await other.close()
    del agent.pool.idle

    # The pod refuses its hand-over: it is deleted (never reused) and the request starts cold.
    (idle,) = await agent.refilled()
    hand_overs.refuse = True
    refused = instance("standby-refused")
    dep_refused = await agent.deployer.deploy(refused, None)
    assert "standby_pod" not in dep_refused.handle
    assert emu.get("pods", idle["metadata"]["name"], NS) is None
    await agent.deployer.wait_started(refused, dep_refused, timeout=30)


async def test_a_source_that_needs_credentials_never_goes_to_a_standby_pod(
    emu: KubeEmulator, agent: Agent, hand_overs: HandOvers
) -> None:
    """A standby pod stages in the process that then runs MLflow on the staged store (a cold
    pod's serve-ui execs MLflow without them): such sources start cold, with an idle pod
    standing by, and no hand-over carries a credential (red team, issue 18)."""
    (idle,) = await agent.refilled()
    deployer = KubernetesDeployer(
        agent.ks, agent.kube, watch_silence=2, standby=agent.pool,
        secrets_for=lambda src: {"AWS_SECRET_ACCESS_KEY": "k3y"} if src.startswith("s3:") else {},
    )  # fmt: skip
    sources = {"standby-s3": "s3://bucket/task/mlruns.tgz",
               "standby-url": "https://me:pa55word@bigpanda.example/x.tgz"}  # fmt: skip
    for name, source in sources.items():
        inst = dataclasses.replace(any_instance(name), source=source)
        dep = await deployer.deploy(inst, None)
        assert "standby_pod" not in dep.handle
        assert emu.get("deployments", inst.name, NS)["spec"]["replicas"] == 1
    assert hand_overs.done == {}
    assert [p["metadata"]["name"] for p in await agent.pool.idle()] == [idle["metadata"]["name"]]
    # A source without credentials (a numeric id is not one; any other query value may be,
    # as for the redaction of URLs) still takes the idle pod; its hand-over names none.
    plain = instance("standby-plain")
    assert (await deployer.deploy(plain, None)).handle["standby_pod"] == idle["metadata"]["name"]
    assert hand_overs.done[idle["metadata"]["name"]]["env"] == {}


async def test_version_change_and_age_recycle_idle_pods(
    emu: KubeEmulator, agent: Agent, hand_overs: HandOvers, tmp_path: Path
) -> None:
    (old,) = await agent.refilled()
    # The version label follows the image (and the pod's args and resources) and the agent.
    ks = agent.ks
    assert sb.pod_version(ks, "") != sb.pod_version(
        KubeSettings(namespace=NS, image="idds-vis-ui:0.2.0"), "")  # fmt: skip
    assert sb.pod_version(ks, "") != sb.pod_version(KubeSettings(namespace=NS, max_files=1), "")
    # A new version (another image, or another agent version): the old idle pod is never
    # claimed, and the next refill replaces it.
    kubeconfig = emu.write_kubeconfig(tmp_path / "new", NS)
    newer = Agent(kubeconfig, hand_overs, agent_version="idds-vis 9.9")
    try:
        assert await newer.pool.idle() == []
        (fresh,) = await newer.refilled()
        assert fresh["metadata"]["name"] != old["metadata"]["name"]
        await until("the old pod deleted", lambda: _gone(emu, old["metadata"]["name"]))
        # Older than max_age: replaced too.
        later = 1e12
        newer.pool.clock = lambda: later
        assert await newer.pool.idle() == []
        await newer.pool.refill()
        assert emu.get("pods", fresh["metadata"]["name"], NS) is None
        assert emu.get("secrets", fresh["metadata"]["name"], NS) is None
    finally:
        await newer.close()


async def _gone(emu: KubeEmulator, pod: str) -> bool:
    return emu.get("pods", pod, NS) is None and emu.get("secrets", pod, NS) is None


async def test_a_restarted_agent_finds_idle_and_claimed_pods_and_shutdown_leaves_nothing(
    emu: KubeEmulator, agent: Agent, hand_overs: HandOvers, tmp_path: Path
) -> None:
    await agent.refilled()
    a = instance("standby-kept")
    dep = await agent.deployer.deploy(a, None)
    claimed = dep.handle["standby_pod"]
    (idle,) = await agent.refilled()
    await agent.close()

    restarted = Agent(emu.write_kubeconfig(tmp_path / "again", NS), hand_overs)
    try:
        # The idle pod is the pool again; the claimed one is A's UI (healthy through it).
        assert [p["metadata"]["name"] for p in await restarted.pool.idle()] == [
            idle["metadata"]["name"]]  # fmt: skip
        (ui,) = await restarted.deployer.running()
        assert (ui.name, ui.healthy) == (a.name, True)
        # A redeploy of A (a restart mid-deploy) adopts its claim: no second claim or hand-over.
        again = await restarted.deployer.deploy(a, None)
        assert again.handle["standby_pod"] == claimed
        assert len(hand_overs.done) == 1
        assert len(await restarted.pool.idle()) == 1

        # Shutdown: the idle pods, their Secrets, the standby root and policy go; A stays.
        await restarted.deployer.close()
        for kind in ("pods", "secrets", "configmaps", "networkpolicies"):
            left = [o["metadata"]["name"] for o in emu.list(kind, NS)
                    if o["metadata"]["name"].startswith("idds-vis-standby")
                    and o["metadata"]["name"] != claimed]  # fmt: skip
            assert left == [], (kind, left)
        assert pods_of(emu, a.name) == [claimed]
        await restarted.deployer.delete(a)
        await until("A gone", lambda: restarted.deployer.gone(a.name))
        assert emu.list("pods", NS) == []
        assert [s for s in emu.list("secrets", NS) if "standby" in s["metadata"]["name"]] == []
    finally:
        await restarted.close()


async def test_an_agent_started_without_the_pool_removes_what_a_crashed_one_left(
    emu: KubeEmulator, agent: Agent, tmp_path: Path
) -> None:
    """A crashed agent never closes its pool; restarted with ``ui_pool_kubernetes`` off, it
    has no pool to close either: its first reconcile deletes the standby root, and the garbage
    collector the idle pods and their Secrets (red team, issue 18). A claimed pod stays."""
    (idle,) = await agent.refilled()
    kept = instance("standby-kept-after-crash")
    assert (await agent.deployer.deploy(kept, None)).handle["standby_pod"]
    (idle,) = await agent.refilled()
    await agent.close()  # the crash: no pool.close()
    restarted = KubernetesDeployer(KubeSettings(namespace=NS),
                                   KubeClient(str(emu.write_kubeconfig(tmp_path / "k2", NS))),
                                   watch_silence=2)  # fmt: skip
    try:
        await restarted.running()
        await until("the idle pod gone", lambda: _gone(emu, idle["metadata"]["name"]))
        assert emu.get("configmaps", sb.root_name("mlflow"), NS) is None
        assert len(pods_of(emu, kept.name)) == 1  # the claimed pod is its instance's
    finally:
        await restarted.kube.close()


def test_the_setting_wires_standby_pods_only_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Experimental: `ui_pool` alone keeps the Kubernetes deployer cold, and says so; with
    `ui_pool_kubernetes` it gets standby pods of that size and age."""
    from idds_vis.runtime.config import Settings
    from idds_vis.runtime.wiring import build_deployer

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    base = {"state_dir": tmp_path / "state", "deployer": "kubernetes", "namespace": NS,
            "kubeconfig": str(kubeconfig), "ui_pool": {"mlflow": 2}}  # fmt: skip
    cold = build_deployer(Settings(**base))
    assert isinstance(cold, KubernetesDeployer) and cold.standby is None
    assert "unless ui_pool_kubernetes is true" in caplog.text
    caplog.clear()
    warm = build_deployer(Settings(**base, ui_pool_kubernetes=True, ui_pool_max_age="1h"))
    assert isinstance(warm, KubernetesDeployer) and warm.standby is not None
    assert (warm.standby.size, warm.standby.max_age) == (2, 3600.0)
    assert "ui_pool_kubernetes" not in caplog.text


async def test_the_opt_in_standby_role_grants_exactly_the_calls_standby_pods_add(
    tmp_path: Path,
) -> None:
    """conf/standby/role.yaml (not in the default kustomization: the default agent creates no
    pods of its own) holds exactly the calls the standby pool makes beyond conf/role.yaml's."""
    import yaml

    from tests.integration.test_kube_rbac import AGENT_NS, CONF, UI_NS, granted

    docs = [d for d in yaml.safe_load_all((CONF / "standby" / "role.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == UI_NS
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "idds-vis-agent", "namespace": AGENT_NS}]  # fmt: skip
    standby = {(res, verb) for rule in role["rules"] for res in rule["resources"]
               for verb in rule["verbs"]}  # fmt: skip
    assert "standby/role.yaml" not in (CONF / "kustomization.yaml").read_text()

    async with KubeEmulator() as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS)
        emu.ensure_namespace(UI_NS)
        kube = KubeClient(str(kubeconfig), call_timeout=5, retry_budget=5)
        ks = KubeSettings(namespace=UI_NS, agent_namespace=AGENT_NS)
        pool = sb.StandbyPods(ks, kube, size=1, max_age=3600, hand_over=HandOvers(emu))
        deployer = KubernetesDeployer(ks, kube, watch_silence=2, standby=pool)
        try:
            await pool.refill()
            await until("a Ready standby pod", lambda: _has_idle(pool))
            await pool.refill()  # the standby root exists: read back
            inst = instance("rbac-standby")
            assert "standby_pod" in (await deployer.deploy(inst, None)).handle
            await deployer.running()
            pool.version = "another"  # recycled: the idle pod is deleted
            await pool.refill()
            await deployer.close()
            await deployer.delete(inst)
        finally:
            await kube.close()
        calls = [r for r in emu.faults.log if r.resource and r.verb != "discovery"]
    assert {r.namespace for r in calls} == {UI_NS}
    used = {(r.resource, r.verb) for r in calls}
    assert used - granted(UI_NS) - standby == set(), "calls no Role allows"
    assert standby - (used - granted(UI_NS)) == set(), "standby grants no call needs"


async def _has_idle(pool: sb.StandbyPods) -> bool:
    return bool(await pool.idle())


async def test_the_agent_serves_a_request_from_a_standby_pod_and_stops_clean(
    emu: KubeEmulator, hand_overs: HandOvers, tmp_path: Path
) -> None:
    """The real agent with `ui_pool_kubernetes`: its start-up reconcile starts the refill, a
    request is served by a claimed pod (READY), its teardown removes it, and the agent's stop
    removes the idle pods; the pool's counters reach /metrics."""
    from idds_vis.agent.metrics import AgentMetrics
    from idds_vis.agent.service import Agent as RealAgent
    from idds_vis.domain.models import VisRequest
    from idds_vis.domain.phases import Phase
    from idds_vis.runtime.config import Settings
    from idds_vis.runtime.wiring import build_deployer, build_ledger
    from tests.fakes import FakeProbe, FakeStager, SystemClock, wait_for_all

    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    settings = Settings(state_dir=tmp_path / "state", deployer="kubernetes", namespace=NS,
                        kubeconfig=str(kubeconfig), ui_pool={"mlflow": 1},
                        ui_pool_kubernetes=True)  # fmt: skip
    metrics = AgentMetrics()
    deployer = build_deployer(settings, metrics)
    assert isinstance(deployer, KubernetesDeployer) and deployer.standby is not None
    deployer.standby.hand_over_call = hand_overs  # no pod network here
    agent = RealAgent(ledger=build_ledger(settings), stager=FakeStager(), deployer=deployer,
                      probe=FakeProbe(), clock=SystemClock(), poll_interval=0.05,
                      metrics=metrics)  # fmt: skip
    events = agent.events.subscribe()
    await agent.start()
    try:
        await until("a Ready standby pod", lambda: _has_idle(deployer.standby))
        await agent.submit(VisRequest("warm-1", source="https://bigpanda.example/x"))
        done = await wait_for_all(events, {"warm-1"}, {Phase.READY, Phase.FAILED})
        inst = done["warm-1"]
        assert inst.phase is Phase.READY, inst.reason
        (pod,) = pods_of(emu, inst.name)
        assert pod in hand_overs.done, "not served by a standby pod"
        exposition = metrics.exposition().decode()
        assert 'idds_vis_pool_hits_total{tool="mlflow"} 1.0' in exposition
        await agent.teardown(VisRequest("warm-1").key)
        await wait_for_all(events, {"warm-1"}, {Phase.EXPIRED})
        await until("the UI gone", lambda: deployer.gone(inst.name))
        assert emu.get("pods", pod, NS) is None
    finally:
        await agent.stop()
        await agent.ledger.close()
        await deployer.kube.close()
    assert [p["metadata"]["name"] for p in emu.list("pods", NS)] == []
    assert emu.get("configmaps", sb.root_name("mlflow"), NS) is None
