"""The agent's Prometheus metrics, read back from its exposition as Prometheus would."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from idds_vis.agent.metrics import AgentMetrics
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.fakes import FakeDeployer, make_agent, wait_for_phase


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_launch_failure_live_and_reaper_metrics(tmp_path: Path):
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    metrics = AgentMetrics()
    agent = make_agent(ledger, FakeDeployer(tmp_path / "ui"), metrics=metrics)
    good, bad = agent.events.subscribe(), agent.events.subscribe()
    await agent.start()
    try:
        await agent.submit(VisRequest("m-1", source="archive.tgz", ttl=timedelta(hours=1)))
        await agent.submit(VisRequest("m-2", source="bad:archive.tgz"))
        async with asyncio.timeout(30):
            await wait_for_phase(agent, good, "m-1", {Phase.READY})
            await wait_for_phase(agent, bad, "m-2", {Phase.FAILED})
        metrics.count_live(await ledger.list())
        live = samples(metrics)
        await agent.teardown(VisRequest("m-1").key)
        async with asyncio.timeout(30):
            await wait_for_phase(agent, good, "m-1", {Phase.EXPIRED})
        metrics.count_live(await ledger.list())
        after = samples(metrics)
    finally:
        await agent.stop()
        await ledger.close()

    assert live[("idds_vis_requests_total", (("outcome", "ready"),))] == 1
    assert live[("idds_vis_requests_total", (("outcome", "failed"),))] == 1
    assert live[("idds_vis_failures_total", (("reason", "NoMlflowData"),))] == 1
    assert live[("idds_vis_launch_seconds_count", ())] == 1
    for phase in ("resolving", "staging", "deploying", "starting"):
        assert live[("idds_vis_phase_seconds_count", (("phase", phase),))] >= 1, phase
    assert live[("idds_vis_live_instances", (("tool", "mlflow"),))] == 1
    assert after[("idds_vis_live_instances", (("tool", "mlflow"),))] == 0
    assert after[("idds_vis_reaper_lateness_seconds_count", ())] == 1


def test_intake_and_kubernetes_counters():
    metrics = AgentMetrics()
    for outcome in ("submitted", "rejected", "rejected", "ignored"):
        metrics.intake_outcome(outcome)
    metrics.kube_error(409)
    metrics.kube_error(0)
    got = samples(metrics)
    assert got[("idds_vis_intake_messages_total", (("outcome", "rejected"),))] == 2
    assert got[("idds_vis_dead_letters_total", ())] == 2
    assert got[("idds_vis_kubernetes_api_errors_total", (("status", "409"),))] == 1
    assert got[("idds_vis_kubernetes_api_errors_total", (("status", "0"),))] == 1


def test_the_fast_path_counts_ignored_messages_under_the_same_label() -> None:
    metrics = AgentMetrics()
    metrics.intake_ignored()
    metrics.intake_ignored()
    metrics.intake_outcome("ignored")
    text = generate_latest(metrics.registry).decode()
    assert 'idds_vis_intake_messages_total{outcome="ignored"} 3.0' in text
