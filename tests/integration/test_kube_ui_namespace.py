"""UIs in a namespace of their own (issue 17, least privilege), against the API emulator: the
real agent with ``namespace`` (its Lease) and ``ui_namespace`` (every UI object) set apart
deploys, adopts, reconciles and tears down in the UIs' namespace only; the single-namespace
layout stays the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from idds_vis.agent.service import Agent
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.lease import KubeLeaseStore
from idds_vis.deploy.kubernetes.settings import KubeSettings, ui_namespace
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_coordination, build_deployer, build_ledger
from tests.fakes import FakeProbe, FakeStager, SystemClock, wait_for_all
from tests.integration.test_kube_deployer import instance
from tests.k8s_emulator.resources import resolve

AGENT_NS, UI_NS = "agents", "uis"


def split_settings(tmp_path: Path, kubeconfig: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", deployer="kubernetes", namespace=AGENT_NS,
                    ui_namespace=UI_NS, kubeconfig=str(kubeconfig))  # fmt: skip


def split_agent(settings: Settings) -> Agent:
    return Agent(ledger=build_ledger(settings), stager=FakeStager(),
                 deployer=build_deployer(settings), probe=FakeProbe(), clock=SystemClock(),
                 poll_interval=0.05)  # fmt: skip


async def _stop(agent: Agent) -> None:
    await agent.stop()
    await agent.ledger.close()
    await agent.deployer.kube.close()  # type: ignore[attr-defined]


async def test_the_agent_keeps_every_ui_object_in_the_ui_namespace(emu, tmp_path) -> None:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS)
    emu.ensure_namespace(UI_NS)  # conf/namespace.yaml makes both
    settings = split_settings(tmp_path, kubeconfig)
    first = split_agent(settings)
    assert isinstance(first.deployer, KubernetesDeployer)
    assert first.deployer.ks.namespace == UI_NS
    assert first.deployer.ks.agent_namespace == AGENT_NS  # whose pods a UI's policy admits
    events = first.events.subscribe()
    await first.start()
    try:
        for task in ("keep", "lost"):
            await first.submit(VisRequest(task, source="https://bigpanda.example/x"))
        done = await wait_for_all(events, {"keep", "lost"}, {Phase.READY, Phase.FAILED})
        assert {i.phase for i in done.values()} == {Phase.READY}, done
    finally:
        await _stop(first)
    keep, lost = done["keep"].name, done["lost"].name
    for kind in ("deployments", "secrets", "services", "ingresses", "networkpolicies", "pods"):
        assert emu.list(kind, AGENT_NS) == [], kind
        owned = emu.list(kind, UI_NS)
        assert {o["metadata"]["labels"]["app.kubernetes.io/instance"] for o in owned} == {
            keep, lost}, kind  # fmt: skip
    root = emu.get("deployments", keep, UI_NS)
    assert emu.get("secrets", keep, UI_NS)["metadata"]["ownerReferences"][0]["uid"] == (
        root["metadata"]["uid"])  # fmt: skip

    # While no agent runs: a UI deleted by hand, a stray one of ours in the UIs' namespace, and
    # one in the agent's namespace (left from the single-namespace layout): not the agent's
    # business any more, so neither adopted nor deleted.
    emu.api.delete(resolve("deployments"), UI_NS, lost, {"propagationPolicy": "Background"})
    orphan, elsewhere = instance("orphan-1"), instance("elsewhere-1")
    emu.create(objects.deployment(orphan, KubeSettings(namespace=UI_NS), "x", None, False), UI_NS)
    emu.create(objects.deployment(elsewhere, KubeSettings(namespace=AGENT_NS), "x", None, False),
               AGENT_NS)  # fmt: skip
    emu.faults.log.clear()

    second = split_agent(settings)
    events2 = second.events.subscribe()
    report = await second.start()
    try:
        assert report.removed_orphans == [orphan.name]
        assert report.adopted == [keep] and report.restarted == [lost]
        again = await wait_for_all(events2, {"lost"}, {Phase.READY, Phase.FAILED})
        assert again["lost"].phase is Phase.READY
        assert sorted(d["metadata"]["name"] for d in emu.list("deployments", UI_NS)) == sorted(
            [keep, lost])  # fmt: skip
        assert [d["metadata"]["name"] for d in emu.list("deployments", AGENT_NS)] == [
            elsewhere.name]  # fmt: skip
        await second.teardown(VisRequest("keep").key)
        await wait_for_all(events2, {"keep"}, {Phase.EXPIRED})
        deployer = second.deployer
        assert isinstance(deployer, KubernetesDeployer)
        assert await deployer.gone(keep)
        touched = {r.namespace for r in emu.faults.log if r.resource and r.verb != "discovery"}
        assert touched == {UI_NS}, "the deployer reached outside the UIs' namespace"
    finally:
        await _stop(second)


async def test_the_lease_stays_in_the_agent_namespace(emu, tmp_path) -> None:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS)
    emu.ensure_namespace(UI_NS)
    settings = split_settings(tmp_path, kubeconfig)
    ledger = build_ledger(settings)
    coordination = build_coordination(settings, ledger, SystemClock())
    try:
        assert isinstance(coordination.leader, KubeLeaseStore)
        assert await coordination.leader.try_acquire("idds-vis-leader", "replica-a", 15)
        assert emu.get("leases", "idds-vis-leader", AGENT_NS) is not None
        assert emu.list("leases", UI_NS) == []
    finally:
        await coordination.leader.kube.close()  # type: ignore[attr-defined]
        await ledger.close()


def test_without_ui_namespace_the_uis_share_the_agents(tmp_path) -> None:
    assert ui_namespace("vis", None) == ui_namespace("vis", "") == "vis"
    assert ui_namespace("vis", "vis-ui") == "vis-ui"
    settings = Settings(state_dir=tmp_path, deployer="kubernetes", namespace="vis",
                        kubeconfig=str(tmp_path / "none"))  # fmt: skip
    deployer = build_deployer(settings)
    assert isinstance(deployer, KubernetesDeployer) and deployer.ks.namespace == "vis"


@pytest.mark.parametrize("bad", ["UIs", "vis_ui", "-vis", "x" * 64, "a.b"])
def test_a_bad_ui_namespace_is_a_one_line_setting_error(tmp_path, bad) -> None:
    with pytest.raises((InvalidRequest, ValueError)) as refused:
        settings = Settings(state_dir=tmp_path, deployer="kubernetes", namespace="vis",
                            ui_namespace=bad, kubeconfig=str(tmp_path / "none"))  # fmt: skip
        build_deployer(settings)
    message = str(refused.value)
    assert "ui_namespace" in message and "\n" not in message.strip(), message
