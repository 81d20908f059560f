"""/healthz, /readyz and /metrics on a real loopback server, over real parts: a SQLite ledger,
the session's ActiveMQ, the Kubernetes API emulator; stand-in stager and deployer where the
check is not about them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from idds_vis.agent.health import (
    Health,
    Heartbeat,
    WatchTracker,
    add_agent_checks,
    add_running_checks,
    health_of,
    install,
)
from idds_vis.agent.replicas import Coordination
from idds_vis.agent.service import Agent
from idds_vis.api import NoTaskLookup, make_app, serving
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.ledger import SqlLedger
from idds_vis.ledger.leases import SqlClaims, SqlLeases
from idds_vis.runtime.config import Settings
from idds_vis.sources.stomp import StompSettings, StompSource
from tests.activemq import BrokerAddress
from tests.fakes import FakeDeployer, make_agent
from tests.integration.test_kube_rbac import instance
from tests.k8s_emulator import KubeEmulator

HANG_GUARD = 60.0  # seconds; reached only when something is broken


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SqlLedger]:
    opened = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await opened.open()
    yield opened
    await opened.close()


async def get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else text
        return resp.status, body, resp.headers["Content-Type"]


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not await condition():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serve(agent: Agent, tmp_path: Path) -> AsyncIterator[str]:
    app = make_app(agent, Settings(state_dir=tmp_path), NoTaskLookup())
    async with serving(app, "127.0.0.1", 0) as url:
        yield url


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_healthz_fails_when_the_event_loop_heartbeat_is_late(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    agent = make_agent(ledger, FakeDeployer(tmp_path))
    clock = FakeMonotonic()
    install(agent, Health(Heartbeat(interval=1.0, threshold=10.0, monotonic=clock)))
    async with serve(agent, tmp_path) as url:
        status, body, _ = await get(f"{url}/healthz")
        assert (status, body) == (200, {"status": "alive"})
        clock.t += 11.5  # as if the loop had been blocked: no tick for 11.5 s
        status, body, _ = await get(f"{url}/healthz")
        assert status == 503 and body["status"] == "stalled"
        assert "heartbeat is 10.5 s late" in body["reason"]
        # The heartbeat ticks again on its own (real time): alive once more.
        await until(lambda: _status(f"{url}/healthz", 200))


async def test_healthz_fails_when_the_heartbeat_is_not_running(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    agent = make_agent(ledger, FakeDeployer(tmp_path))
    health = health_of(agent)
    async with serve(agent, tmp_path) as url:
        await health.heartbeat.stop()  # as if its task had died
        status, body, _ = await get(f"{url}/healthz")
        assert status == 503 and "heartbeat is not running" in body["reason"]
        health.heartbeat.start()


async def test_readyz_follows_the_ledger_the_broker_and_the_membership_lease(
    ledger: SqlLedger, tmp_path: Path, activemq_broker: BrokerAddress
) -> None:
    leases = SqlLeases(ledger.engine)
    agent = make_agent(ledger, FakeDeployer(tmp_path), agent_id="health:1:aa",
                       coordination=Coordination(leader=leases, members=leases,
                                                 claims=SqlClaims(ledger.engine)))  # fmt: skip
    source = StompSource(StompSettings(
        hosts=[(activemq_broker.host, activemq_broker.port)],
        subscriptions=["/queue/idds-vis.test.health"],
        user=activemq_broker.user, password=activemq_broker.password,
    ))  # fmt: skip
    health = health_of(agent)
    add_running_checks(health, agent, source)
    async with serve(agent, tmp_path) as url:
        status, body, _ = await get(f"{url}/readyz")
        assert status == 503 and body["status"] == "not ready"
        assert body["checks"]["ledger"] == "ok"
        assert body["checks"]["broker"] == "not connected to the message broker"
        assert "membership lease" in body["checks"]["membership"]  # the agent is not started

        await agent.start()
        await source.start()
        try:
            await source.wait_connected()
            await until(lambda: _status(f"{url}/readyz", 200))
            status, body, _ = await get(f"{url}/readyz")
            assert body == {
                "status": "ready",
                "checks": {"ledger": "ok", "membership": "ok", "broker": "ok"},
            }
        finally:
            await source.stop()
            await agent.stop()
        status, body, _ = await get(f"{url}/readyz")
        assert status == 503 and body["checks"]["broker"] != "ok"
        assert body["checks"]["membership"] != "ok"  # stopping gave the lease back


async def test_readyz_fails_when_the_ledger_is_unreachable(tmp_path: Path) -> None:
    ledger = SqlLedger(f"postgresql+asyncpg://nobody@127.0.0.1:{closed_port()}/nothing")
    agent = make_agent(ledger, FakeDeployer(tmp_path))
    async with serve(agent, tmp_path) as url:
        status, body, _ = await get(f"{url}/readyz")
        assert status == 503
        assert body["checks"]["ledger"].startswith("the ledger is unreachable: ")
        status, _, _ = await get(f"{url}/healthz")
        assert status == 200  # alive all the same: restarting would not bring the database back
    await ledger.close()


async def test_readyz_fails_while_a_pod_watch_is_silent_past_its_timeout(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    watches = WatchTracker()
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", "vis"))
        kube = KubeClient(kubeconfig, call_timeout=5, retry_budget=5)
        deployer = KubernetesDeployer(KubeSettings(namespace="vis"), kube, watch_silence=1,
                                      watches=watches)  # fmt: skip
        # The health is the process's: the agent's own deployer need not be this one.
        agent = make_agent(ledger, FakeDeployer(tmp_path))
        health = install(agent, Health())
        add_agent_checks(health, agent)
        health.add_check("watches", watches.check)
        inst = instance("watched")
        emu.set_behaviour("never-ready", name=inst.name)
        deployment = await deployer.deploy(inst, None)
        # Pod watches stay connected and never answer, like over a dead TCP connection.
        emu.inject_hang(verb="watch", resource="pods", times=None)
        waiting = asyncio.create_task(deployer.wait_started(inst, deployment, timeout=120))
        try:
            async with serve(agent, tmp_path) as url:
                # Each watch is silent past its timeout from 1 s after it opens until the
                # deployer's own guard ends it (5 s later); then the next one opens.
                body = await first_unready(f"{url}/readyz")
                reason = body["checks"]["watches"]
                assert f"the watch on the pods of {inst.name} has been silent for" in reason
                assert "(timeout 1 s)" in reason
                assert body["checks"]["ledger"] == "ok"
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                status, body, _ = await get(f"{url}/readyz")
                assert (status, body["checks"]["watches"]) == (200, "ok")
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await deployer.delete(inst)
            await kube.close()


async def test_metrics_are_the_agents_prometheus_exposition(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    leases = SqlLeases(ledger.engine)
    agent = make_agent(ledger, FakeDeployer(tmp_path), agent_id="metrics:1:aa",
                       coordination=Coordination(leader=leases, members=leases,
                                                 claims=SqlClaims(ledger.engine)))  # fmt: skip
    agent.metrics.failed("DeployError")
    await agent.start()
    try:
        async with serve(agent, tmp_path) as url:
            await until(lambda: _lease_gauges(url, {("leader", 1.0), ("member", 1.0)}))
            status, text, kind = await get(f"{url}/metrics")
            assert (status, kind) == (200, CONTENT_TYPE_LATEST)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            failures = families["idds_vis_failures"].samples
            assert [(s.labels, s.value) for s in failures if s.name.endswith("_total")] == [
                ({"reason": "DeployError"}, 1.0)
            ]
    finally:
        await agent.stop()


async def first_unready(url: str) -> Any:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            status, body, _ = await get(url)
            if status == 503:
                return body
            await asyncio.sleep(0.05)


async def _status(url: str, expected: int) -> bool:
    status, _, _ = await get(url)
    return status == expected


async def _lease_gauges(url: str, expected: set[tuple[str, float]]) -> bool:
    _, text, _ = await get(f"{url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    found = {(s.labels["lease"], s.value) for s in families["idds_vis_lease_held"].samples}
    return found == expected
