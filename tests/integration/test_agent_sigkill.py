"""SIGKILL of the real agent between the acknowledgement and the deployment, then a restart.

`idds-vis agent` runs as a subprocess with the local deployer, reading a queue of a real ActiveMQ.
Every artefact source is an URL of an HTTP server in this test that holds each answer until the
test releases it, so the agent is deterministically stuck in staging, after its commit and its
ack, when it is killed. Nothing sleeps to synchronise: each wait is an event of the held server
or a polled condition under a hang guard.

"The broker has handled the acks" is checked by browsing the queue (ActiveMQ's STOMP
``browser: true`` subscription): a browser sees delivered-but-unacked messages too (seen with
Debian's ActiveMQ 5.17), so an empty browse means every message was acked, and it consumes
nothing, so it does not compete with the agent for messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from idds_vis.deploy.local_processes import find_ui_processes
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.activemq import BrokerAddress, connect_collector

pytestmark = pytest.mark.mlflow
CLI = [sys.executable, "-m", "idds_vis"]
N = 3  # each real UI costs ~250 MB and ~7 s of CPU
HANG_GUARD = 300.0  # seconds; only reached when something is broken


class HeldArchive:
    """Serves the training archive at /artefacts/<task>.tar.gz, but only once released."""

    def __init__(self, archive: Path) -> None:
        self.body = archive.read_bytes()
        self.released = asyncio.Event()
        self.arrivals: Counter[str] = Counter()
        self._arrived = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        task = request.match_info["task"]
        async with self._arrived:
            self.arrivals[task] += 1
            self._arrived.notify_all()
        await self.released.wait()
        return web.Response(body=self.body, content_type="application/gzip")

    async def wait_for(self, predicate: Callable[[Counter[str]], bool]) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: predicate(self.arrivals))

    def source(self, task: str) -> str:
        return f"{self.url}/artefacts/{task}.tar.gz"


@pytest_asyncio.fixture
async def held_archive(demo_archive: Path) -> AsyncIterator[HeldArchive]:
    server = HeldArchive(demo_archive)
    app = web.Application()
    app.router.add_get("/artefacts/{task}.tar.gz", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    yield server
    server.released.set()  # a handler still waiting must not hold up the shutdown
    await runner.cleanup()


# -- the test's own side of the broker (blocking stomp.py; called through to_thread) ---------




def publish(broker: BrokerAddress, destination: str, bodies: list[bytes]) -> None:
    """Persistent SENDs, each receipted: back only once the broker has stored every one."""
    conn, frames = connect_collector(broker)
    try:
        expected = set()
        for body in bodies:
            receipt = f"sent-{uuid.uuid4().hex}"
            expected.add(receipt)
            conn.send(destination, body, headers={"persistent": "true", "receipt": receipt})
        while expected:
            expected.discard(frames.receipts.get(timeout=HANG_GUARD))
    finally:
        conn.disconnect()


def browse(broker: BrokerAddress, destination: str) -> list[bytes]:
    """Every message still on the queue, delivered-but-unacked ones included; consumes none."""
    conn, frames = connect_collector(broker)
    try:
        conn.subscribe(destination, "browse", ack="auto", headers={"browser": "true"})
        bodies: list[bytes] = []
        while True:
            headers, body = frames.messages.get(timeout=HANG_GUARD)
            if headers.get("browser") == "end":
                return bodies
            bodies.append(body)
    finally:
        conn.disconnect()


# -- the agent process and its ledger --------------------------------------------------------


def start_agent(config: Path, log: Path) -> subprocess.Popen[str]:
    # A session of its own: the SIGKILL below goes to its whole process group and nowhere else.
    return subprocess.Popen([*CLI, "--config", str(config), "agent"], stdout=subprocess.DEVNULL,
                            stderr=log.open("a"), text=True, start_new_session=True)  # fmt: skip


async def wait_until_running(agent: subprocess.Popen[str], log: Path, starts: int) -> None:
    """Until the agent says it runs (its intake subscribed); ``starts`` counts restarts."""
    async with asyncio.timeout(HANG_GUARD):
        while log.read_text().count("agent running") < starts:
            assert agent.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.2)


async def wait_for_phases(
    ledger: SqlLedger, agent: subprocess.Popen[str], log: Path, tasks: set[str], phase: Phase
) -> list[Instance]:
    """Poll the ledger until every task is in ``phase``; a failed one ends the wait at once."""
    async with asyncio.timeout(HANG_GUARD):
        while True:
            rows = await ledger.list()
            failed = [(r.task_id, r.reason) for r in rows if r.phase is Phase.FAILED]
            assert not failed, (failed, log.read_text()[-3000:])
            if {r.task_id for r in rows if r.phase is phase} == tasks:
                return rows
            assert agent.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.5)


async def wait_until_drained(broker: BrokerAddress, destination: str) -> None:
    """Until the broker holds nothing on ``destination``: every message was acked."""
    async with asyncio.timeout(HANG_GUARD):
        while await asyncio.to_thread(browse, broker, destination):
            await asyncio.sleep(0.2)


def kill_group(agent: subprocess.Popen[str]) -> None:
    if agent.poll() is None:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(timeout=60)


async def test_sigkill_between_ack_and_deploy_loses_and_doubles_nothing(
    tmp_path: Path, activemq_broker: BrokerAddress, held_archive: HeldArchive
) -> None:
    run = uuid.uuid4().hex[:8]
    destination, dlq = f"/queue/idds-vis.test.sigkill.{run}", f"/queue/idds-vis.test.dlq.{run}"
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state),
        "workers": N,  # every request is staging (and held) at once
        "stomp_hosts": [f"{activemq_broker.host}:{activemq_broker.port}"],
        "stomp_subscriptions": [destination],
        "stomp_user": activemq_broker.user,
        "stomp_password": activemq_broker.password,
        "stomp_dead_letter": dlq,
        "stomp_relay_queue": f"/queue/idds-vis.test.relay.{run}",
        # The held sources are served on loopback, which a message may reach only when listed.
        "allow_private_addresses": ["127.0.0.1/32"],
    }))  # fmt: skip
    label = Settings(state_dir=state).ui_label
    tasks = {f"sigkill-{run}-{i}" for i in range(N)}
    bodies = [
        json.dumps({"msg_type": "vis_request", "task_id": task, "tool": "mlflow",
                    "source": held_archive.source(task), "ttl": "1h"}).encode()
        for task in sorted(tasks)
    ]  # fmt: skip
    log = tmp_path / "agent.log"
    ledger = SqlLedger(f"sqlite+aiosqlite:///{state / 'ledger.db'}")
    agent = start_agent(config, log)
    try:
        await wait_until_running(agent, log, starts=1)
        await ledger.open()  # after the agent made the schema
        await asyncio.to_thread(publish, activemq_broker, destination, bodies)

        # Every request committed and its download held: the agent is between ack and deploy.
        async with asyncio.timeout(HANG_GUARD):
            await held_archive.wait_for(lambda seen: set(seen) == tasks)
        staging = await wait_for_phases(ledger, agent, log, tasks, Phase.STAGING)
        assert len(staging) == N
        await wait_until_drained(activemq_broker, destination)  # the broker handled every ack

        kill_group(agent)
        assert agent.returncode == -signal.SIGKILL
        # The broker has nothing to give back: no message was in flight when the agent died.
        assert await asyncio.to_thread(browse, activemq_broker, destination) == []
        assert find_ui_processes(label) == []  # it died before deploying anything

        held_archive.released.set()
        agent = start_agent(config, log)
        await wait_until_running(agent, log, starts=2)
        ready = await wait_for_phases(ledger, agent, log, tasks, Phase.READY)

        # Exactly one record and one UI per request.
        assert sorted(r.task_id for r in ready) == sorted(tasks)
        names = sorted(r.name for r in ready)
        assert sorted(p.name for p in find_ui_processes(label)) == names
        for inst in ready:
            history = await ledger.history(InstanceKey(inst.task_id))
            restarted = [e for e in history if e.phase is Phase.REQUESTED and e.reason]
            assert [e.reason for e in restarted] == [
                "the agent restarted during staging; starting again"
            ], history
        # The first agent's downloads died with it; the second fetched each archive again, once.
        assert held_archive.arrivals == dict.fromkeys(tasks, 2)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for inst in ready:
                assert inst.url is not None
                async with http.get(inst.url) as resp:
                    assert resp.status == 200, inst.url

        # Nothing redelivered, nothing dead-lettered, nothing poisoned by a STOMP NACK.
        assert await asyncio.to_thread(browse, activemq_broker, destination) == []
        assert await asyncio.to_thread(browse, activemq_broker, dlq) == []
        poisoned = await asyncio.to_thread(browse, activemq_broker, "/queue/ActiveMQ.DLQ")
        assert not set(bodies) & set(poisoned)

        for task in sorted(tasks):
            done = await asyncio.to_thread(
                subprocess.run,
                [*CLI, "--config", str(config), "teardown", "--task", task, "--json"],
                capture_output=True, text=True, timeout=HANG_GUARD,
            )  # fmt: skip
            assert json.loads(done.stdout)["phase"] == "expired", done.stderr
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert find_ui_processes(label) == []
        assert len(await ledger.list()) == N
    finally:
        kill_group(agent)
        await ledger.close()
