"""The STOMP intake end to end against a real ActiveMQ (Debian's package; tests/activemq.py).

Every wait is on a queue or an event under a hang guard; nothing sleeps to synchronise and no
test asserts on timing. "Nothing left on the broker" is checked with a sentinel: a consumer
subscribes, a sentinel message is sent after everything else, and whatever arrives before the
sentinel was left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
import stomp

from idds_vis.agent.intake import Intake, Outcome
from idds_vis.agent.service import Agent
from idds_vis.domain.errors import InvalidRequest, NotFound
from idds_vis.domain.messages import Trigger
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.ports.source import Delivery, MessageSource
from idds_vis.sources import StompSettings, StompSource
from idds_vis.sources.stomp import (
    ORIGINAL_DESTINATION_HEADER,
    ORIGINAL_MESSAGE_ID_HEADER,
    REASON_HEADER,
)
from idds_vis.sources.stomp_relay import relay_headers
from idds_vis.sources.stomp_remote import RECEIVER_MODULE, FastIgnore
from tests.activemq import ActiveMQ, BrokerAddress
from tests.fakes import FakeDeployer, make_agent
from tests.message_fixtures import fixture_body, fixture_message

# Registers the session broker fixture for this module; drop it once conftest.py registers it.

HANG_GUARD = 90.0  # seconds; only ever reached when something is broken
PANDA_DONE = fixture_message("panda_task_status_done.json")[1]
IDDS_FINISHED = fixture_body("idds_work_processing_finished.json")
# The headers iDDS sent with it (captured); the broker sets destination/message-id itself.
IDDS_HEADERS = {
    "vo": "atlas",
    "from_idds": "true",
    "msg_type": "messagetype.processingwork",
    "ttl": "43200000",
    "priority": "4",
}


def task_status(taskid: int, status: str = "done") -> bytes:
    return json.dumps(
        {"msg_type": "task_status", "taskid": taskid, "status": status, "timestamp": 1795297866}
    ).encode()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- the test's own side of the broker: a plain stomp.py client --------------------------


class Bus:
    """Publishes and reads with stomp.py directly (blocking: call it through to_thread)."""

    def __init__(self, address: BrokerAddress) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()
        self.conn = stomp.Connection12([(address.host, address.port)], auto_decode=False)
        self.conn.set_listener("test", self)
        self.conn.connect(address.user, address.password, wait=True)

    def on_message(self, frame: Any) -> None:
        self.received.put((frame.headers["subscription"], dict(frame.headers), frame.body))

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def publish(
        self, destination: str, bodies: Iterable[bytes], headers: dict[str, str] | None = None
    ) -> None:
        """Send persistently and return once the broker has stored every message.

        Each SEND asks for a receipt: ActiveMQ stores a persistent message sent without one
        asynchronously, and a broker killed right after can lose it (seen).
        """
        expected = set()
        for body in bodies:
            receipt = unique("sent")
            expected.add(receipt)
            extra = {"persistent": "true", "receipt": receipt, **(headers or {})}
            self.conn.send(destination, body, headers=extra)
        while expected:
            expected.discard(self.receipts.get(timeout=HANG_GUARD))

    def leftovers(self, destination: str) -> list[tuple[dict[str, str], bytes]]:
        """Everything waiting on ``destination`` (consumed), found with a sentinel."""
        sub = unique("drain")
        sentinel = f"sentinel {sub}".encode()
        self.conn.subscribe(destination, sub, ack="auto")
        self.publish(destination, [sentinel])
        found = []
        while True:
            got_sub, headers, body = self.received.get(timeout=HANG_GUARD)
            if got_sub != sub:
                continue
            if body == sentinel:
                self.conn.unsubscribe(sub)
                return found
            found.append((headers, body))

    def close(self) -> None:
        self.conn.disconnect()


@pytest.fixture
def bus(activemq_broker: BrokerAddress) -> Any:
    b = Bus(activemq_broker)
    yield b
    b.close()


@pytest.fixture(params=["direct", "relayed"])
def relay(request: pytest.FixtureRequest) -> str | None:
    """How the stream is read: None, directly (``client-individual``); or relayed through this
    relay queue (``StompSettings.relay_queue``: cumulative acks on the stream)."""
    return None if request.param == "direct" else f"/queue/{unique('relay')}"


async def nothing_left(bus: Bus, *destinations: str | None) -> None:
    """Every message on these queues was acked (None: no queue)."""
    for destination in destinations:
        if destination is not None:
            assert await asyncio.to_thread(bus.leftovers, destination) == [], destination


# -- stand-ins for the agent and a spy on the source --------------------------------------


def fake_instance(request: VisRequest) -> Instance:
    now = datetime.now(UTC)
    return Instance(
        request.task_id,
        request.tool,
        request.key.name,
        Phase.REQUESTED,
        request.source,
        request.ttl,
        now,
        now,
        origin=request.origin,
        requested_by=request.requested_by,
    )


class RecordingAgent:
    """``submit`` like the ledger's: idempotent by (task, tool), in memory; can fail or block."""

    def __init__(self, log: list[tuple[str, str]] | None = None) -> None:
        self.records: dict[InstanceKey, VisRequest] = {}
        self.log = log if log is not None else []
        self.fail_once: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def submit(self, request: VisRequest) -> tuple[Instance, bool]:
        if request.task_id in self.fail_once:
            self.fail_once.discard(request.task_id)
            raise RuntimeError("database is down")
        if request.task_id in self.gates:
            self.entered.setdefault(request.task_id, asyncio.Event()).set()
            await self.gates[request.task_id].wait()
        created = request.key not in self.records
        self.records.setdefault(request.key, request)
        self.log.append(("submit", request.task_id))
        self.changed.set()
        return fake_instance(request), created

    async def end(self, key: InstanceKey) -> Instance:
        if key not in self.records:
            raise NotFound(f"no visualization for task {key.task_id}")
        self.log.append(("end", key.task_id))
        return fake_instance(self.records[key])

    async def wait_for(self, count: int) -> None:
        while len(self.records) < count:
            self.changed.clear()
            await self.changed.wait()


class SpySource:
    """The real source, with every settle call logged (after it returned)."""

    def __init__(self, inner: StompSource, log: list[tuple[str, str]]) -> None:
        self.inner = inner
        self.log = log

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def messages(self) -> AsyncIterator[Delivery]:
        return self.inner.messages()

    async def ack(self, delivery: Delivery) -> None:
        await self.inner.ack(delivery)
        self.log.append(("ack", delivery.message_id))

    async def nack(self, delivery: Delivery) -> None:
        await self.inner.nack(delivery)
        self.log.append(("nack", delivery.message_id))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.inner.dead_letter(delivery, reason)
        self.log.append(("dead_letter", delivery.message_id))


Outcomes = asyncio.Queue[tuple[Delivery, Outcome, str]]


async def collect(outcomes: Outcomes, count: int) -> list[tuple[Delivery, Outcome, str]]:
    async with asyncio.timeout(HANG_GUARD):
        return [await outcomes.get() for _ in range(count)]


@asynccontextmanager
async def running_intake(
    address: BrokerAddress,
    destination: str,
    agent: Any,
    *,
    dlq: str = "/queue/idds-vis.DLQ",
    wrap: Callable[[StompSource], MessageSource] | None = None,
    dedup_size: int = 4096,
    fast_ignored: list[str] | None = None,
    concurrency: int = 1,
    **settings: Any,
) -> AsyncIterator[tuple[StompSource, Outcomes]]:
    options = {
        "heartbeats": (1000, 1000),
        "reconnect_initial": 0.1,
        "reconnect_max": 1.0,
        "retry_initial": 0.05,
        "connect_timeout": 5.0,
    } | settings
    source = StompSource(
        StompSettings(
            hosts=[(address.host, address.port)],
            subscriptions=[destination],
            user=address.user,
            password=address.password,
            dead_letter_destination=dlq,
            **options,
        )
    )
    outcomes: Outcomes = asyncio.Queue()
    port = wrap(source) if wrap else source
    intake = Intake(
        port,
        agent,
        dedup_size=dedup_size,
        on_outcome=lambda d, o, detail: outcomes.put_nowait((d, o, detail)),
        concurrency=concurrency,
    )
    if fast_ignored is not None:  # as the wiring does: ignorable traffic acked off the loop
        source.fast_ignore = FastIgnore(intake.parse_options, intake.fast_ignored)
        intake.on_fast_ignore = lambda n: fast_ignored.extend(["ignored"] * n)
    await port.start()
    async with asyncio.timeout(HANG_GUARD):
        await source.wait_connected()
    task = asyncio.create_task(intake.run())
    try:
        yield source, outcomes
    finally:
        await port.stop()
        async with asyncio.timeout(HANG_GUARD):
            await task


@pytest_asyncio.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """The real agent on a SQLite ledger (not started: only ``submit`` is exercised)."""
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    yield make_agent(ledger, FakeDeployer(tmp_path / "instances"), max_ttl=timedelta(days=2))
    await ledger.close()


# -- the scenarios --------------------------------------------------------------------------


async def test_panda_task_status_is_submitted_then_acked(activemq_broker, bus, relay):
    topic = unique("VirtualTopic.panda")
    log: list[tuple[str, str]] = []
    agent = RecordingAgent(log)
    queue_name = f"/queue/Consumer.idds-vis.{topic}"  # an ActiveMQ virtual-topic queue
    # Default (10 s) heartbeats: the exact order below must not meet a spurious reconnect.
    async with running_intake(
        activemq_broker,
        queue_name,
        agent,
        wrap=lambda s: SpySource(s, log),
        heartbeats=(10_000, 10_000),
        relay_queue=relay,
    ) as (_, outcomes):
        await asyncio.to_thread(bus.publish, f"/topic/{topic}", [PANDA_DONE])
        [(delivery, outcome, _)] = await collect(outcomes, 1)
    assert outcome is Outcome.SUBMITTED
    assert log == [("submit", "1"), ("ack", delivery.message_id)]  # ack after commit
    assert [r.origin for r in agent.records.values()] == ["panda"]
    assert delivery.headers["original-destination"] == f"/topic/{topic}"
    assert delivery.destination == queue_name  # relayed or not: where it was delivered first
    # The broker agrees it was acked: nothing is left on the queue (nor on the relay queue).
    await nothing_left(bus, queue_name, relay)


@pytest.mark.parametrize("dedup_size", [4096, 0], ids=["lru", "ledger-only"])
async def test_idds_message_replayed_three_times_makes_one_record(
    activemq_broker, bus, agent, dedup_size
):
    dest = f"/queue/{unique('idds')}"
    body = json.dumps(IDDS_FINISHED).encode()
    async with running_intake(activemq_broker, dest, agent, dedup_size=dedup_size) as (_, outcomes):
        await asyncio.to_thread(bus.publish, dest, [body] * 3, IDDS_HEADERS)
        results = await collect(outcomes, 3)
    ids = {d.message_id for d, _, _ in results}
    assert len(ids) == 3  # three distinct broker messages...
    replay = Outcome.DUPLICATE if dedup_size else Outcome.EXISTING
    assert [o for _, o, _ in results] == [Outcome.SUBMITTED, replay, replay]
    records = await agent.ledger.list()  # ...one record
    assert [(r.task_id, r.origin) for r in records] == [("idds:2/551521", "idds")]
    assert await asyncio.to_thread(bus.leftovers, dest) == []


TASKID_TEXT = b'{"msg_type": "task_status", "taskid": "abc", "status": "done"}'
WORKLOAD_ARRAY = (
    b'{"msg_type": "work_processing", "status": "Finished", "request_id": 2, "workload_id": []}'
)
MALFORMED = {
    b"this is not json": "message body is not JSON",
    TASKID_TEXT: "field 'taskid' must be an integer, got 'abc'",
    b'{"msg_type": "task_status", "status": "done"}': "field 'taskid' is missing",
    WORKLOAD_ARRAY: "field 'workload_id' must be an integer, got an array",
    b'{"msg_type": "task_update", "taskid": 1}': "field 'msg_type' is 'task_update'",
    b'["task_status", 1, "done"]': "must be a JSON object",
    b"\xff\xfe\x00{}": "not UTF-8",
    b'{"msg_type": "vis_request", "task_id": "7", "ttl": "forever"}': "field 'ttl'",
    b"{" + b" " * 70_000 + b"}": "over the limit of 65536",
}


async def test_malformed_messages_go_to_the_dead_letter_queue_with_a_reason(
    activemq_broker, bus, relay
):
    dest, dlq = f"/queue/{unique('bad')}", f"/queue/{unique('dlq')}"
    agent = RecordingAgent()
    async with running_intake(activemq_broker, dest, agent, dlq=dlq, relay_queue=relay) as (
        _,
        outcomes,
    ):
        await asyncio.to_thread(bus.publish, dest, list(MALFORMED))
        results = await collect(outcomes, len(MALFORMED))
    assert {o for _, o, _ in results} == {Outcome.REJECTED}
    dead = await asyncio.to_thread(bus.leftovers, dlq)
    assert sorted(body for _, body in dead) == sorted(MALFORMED)  # every body, byte for byte
    for headers, body in dead:
        assert MALFORMED[body] in headers[REASON_HEADER]
        assert headers[ORIGINAL_DESTINATION_HEADER] == dest
        assert headers[ORIGINAL_MESSAGE_ID_HEADER].startswith("ID:")  # the original's own id
        assert headers["persistent"] == "true"
    await nothing_left(bus, dest, relay)  # originals (and copies) acked


async def test_failed_submit_is_retried_and_not_poisoned(activemq_broker, bus, relay):
    dest = f"/queue/{unique('retry')}"
    agent = RecordingAgent()
    agent.fail_once.add("77")
    async with running_intake(activemq_broker, dest, agent, relay_queue=relay) as (_, outcomes):
        await asyncio.to_thread(bus.publish, dest, [task_status(77)])
        results = await collect(outcomes, 2)
    assert [(o, d.attempt) for d, o, _ in results] == [(Outcome.RETRY, 1), (Outcome.SUBMITTED, 2)]
    assert "database is down" in results[0][2]
    assert list(agent.records) == [InstanceKey("77")]
    await nothing_left(bus, dest, relay)
    # No STOMP NACK was sent: ActiveMQ would have moved the message to ActiveMQ.DLQ.
    poisoned = await asyncio.to_thread(bus.leftovers, "/queue/ActiveMQ.DLQ")
    assert task_status(77) not in [body for _, body in poisoned]


async def test_a_request_the_agent_refuses_is_dead_lettered(activemq_broker, bus, agent):
    dest, dlq = f"/queue/{unique('refused')}", f"/queue/{unique('dlq')}"
    too_long = json.dumps({"msg_type": "vis_request", "task_id": "7", "ttl": "30d"}).encode()
    async with running_intake(activemq_broker, dest, agent, dlq=dlq) as (_, outcomes):
        await asyncio.to_thread(bus.publish, dest, [too_long])
        [(_, outcome, reason)] = await collect(outcomes, 1)
    assert outcome is Outcome.REJECTED
    [(headers, body)] = await asyncio.to_thread(bus.leftovers, dlq)
    assert body == too_long
    assert headers[REASON_HEADER] == reason == "task 7: TTL 30d is over the maximum of 2d"
    assert await agent.ledger.list() == []


async def test_thousand_malformed_and_hundred_good_messages(activemq_broker, bus, agent, relay):
    dest, dlq = f"/queue/{unique('mixed')}", f"/queue/{unique('dlq')}"
    good = [task_status(5000 + i) for i in range(100)]
    kinds = [
        b"not json %d",
        b'{"msg_type": "task_status", "taskid": "x%d", "status": "done"}',
        b'{"msg_type": "nope", "n": %d}',
        b"[%d]",
        b'{"msg_type": "task_status", "taskid": %d}',
    ]
    bad = [kinds[i % len(kinds)] % i for i in range(1000)]
    mixed = good + bad
    random.Random(7).shuffle(mixed)
    async with running_intake(activemq_broker, dest, agent, dlq=dlq, relay_queue=relay) as (
        _,
        outcomes,
    ):
        await asyncio.to_thread(bus.publish, dest, mixed)
        results = await collect(outcomes, len(mixed))
    counts = {o: sum(1 for _, x, _ in results if x is o) for o in Outcome}
    assert (counts[Outcome.SUBMITTED], counts[Outcome.REJECTED]) == (100, 1000)
    records = await agent.ledger.list()
    assert sorted(r.task_id for r in records) == [str(5000 + i) for i in range(100)]
    dead = await asyncio.to_thread(bus.leftovers, dlq)
    assert sorted(body for _, body in dead) == sorted(bad)
    assert all(headers[REASON_HEADER] for headers, _ in dead)
    await nothing_left(bus, dest, relay)


@pytest.fixture
def private_broker(tmp_path: Path) -> Any:
    """A broker of the test's own, to restart or freeze without disturbing other tests."""
    broker = ActiveMQ(tmp_path / "activemq")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "crash"])
async def test_broker_restart_mid_stream(private_broker, kill, relay):
    address = private_broker.address
    dest = f"/queue/{unique('restart')}"
    agent = RecordingAgent()
    agent.gates["5"] = asyncio.Event()  # hold the 5th message in submit while the broker goes
    async with running_intake(address, dest, agent, relay_queue=relay) as (source, _):
        first = await asyncio.to_thread(Bus, address)
        await asyncio.to_thread(first.publish, dest, [task_status(i) for i in range(1, 21)])
        await asyncio.to_thread(first.close)
        async with asyncio.timeout(HANG_GUARD):
            await agent.entered.setdefault("5", asyncio.Event()).wait()
        await asyncio.to_thread(private_broker.restart, kill=kill)
        agent.gates["5"].set()
        second = await asyncio.to_thread(Bus, address)
        later = [task_status(i) for i in range(21, 31)] + [task_status(999)]  # 999: sentinel
        await asyncio.to_thread(second.publish, dest, later)
        async with asyncio.timeout(HANG_GUARD):
            await agent.wait_for(31)
        assert source.connections >= 2
    assert sorted(int(k.task_id) for k in agent.records) == [*range(1, 31), 999]
    # Everything was acked in the end, redeliveries included.
    await nothing_left(second, dest, relay)
    await asyncio.to_thread(second.close)


async def test_a_silent_broker_is_noticed_by_heartbeats(private_broker):
    address = private_broker.address
    dest = f"/queue/{unique('silent')}"
    agent = RecordingAgent()
    async with running_intake(address, dest, agent, heartbeats=(500, 500), connect_timeout=2.0) as (
        source,
        _,
    ):
        private_broker.pause()  # the TCP connection stays open; only heartbeats can tell
        try:
            async with asyncio.timeout(HANG_GUARD):
                await source.wait_disconnected()
        finally:
            private_broker.resume()
        async with asyncio.timeout(HANG_GUARD):
            await source.wait_connected()
        bus = await asyncio.to_thread(Bus, address)
        await asyncio.to_thread(bus.publish, dest, [task_status(42)])
        async with asyncio.timeout(HANG_GUARD):
            await agent.wait_for(1)
        await asyncio.to_thread(bus.close)
        assert source.connections >= 2


def receiver_processes() -> list[psutil.Process]:
    """This process's STOMP receiver processes (idds_vis.sources.stomp_receiver)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if RECEIVER_MODULE in " ".join(child.cmdline()):
                found.append(child)
    return found


async def test_a_killed_receiver_process_is_replaced_and_nothing_is_lost(
    activemq_broker, bus, relay
):
    """The connection lives in a receiver process: when it dies, the source connects again
    with a new one, the broker hands back what was unacked, and every message is committed;
    once the source stops, no receiver process is left."""
    dest = f"/queue/{unique('receiver')}"
    agent = RecordingAgent()
    agent.gates["5"] = asyncio.Event()  # hold the 5th in submit while its receiver dies
    async with running_intake(activemq_broker, dest, agent, relay_queue=relay) as (source, _):
        await asyncio.to_thread(bus.publish, dest, [task_status(i) for i in range(1, 21)])
        async with asyncio.timeout(HANG_GUARD):
            await agent.entered.setdefault("5", asyncio.Event()).wait()
        (receiver,) = receiver_processes()
        receiver.kill()
        async with asyncio.timeout(HANG_GUARD):
            while source.connections < 2:
                await asyncio.sleep(0.01)  # the next connection's count; polled, bounded
        agent.gates["5"].set()
        await asyncio.to_thread(bus.publish, dest, [task_status(999)])  # a sentinel, after
        async with asyncio.timeout(HANG_GUARD):
            await agent.wait_for(21)
        assert source.connections == 2
        assert [p.pid for p in receiver_processes()] != [receiver.pid]
    assert sorted(int(k.task_id) for k in agent.records) == [*range(1, 21), 999]
    await nothing_left(bus, dest, relay)
    assert receiver_processes() == []


# -- the intake's own decisions, on an in-memory source (no broker) -----------------------


class MemorySource:
    """The MessageSource port in memory: nack redelivers at once, settles are logged.

    ``messages()`` ends when nothing is queued: the intake settles (and so re-queues a nacked
    delivery) before it asks for the next one.
    """

    def __init__(self, bodies: Iterable[bytes] = ()) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.settled: list[tuple[str, str]] = []
        self.fail_dead_letter = 0
        for i, body in enumerate(bodies):
            self.queue.put_nowait(Delivery({}, body, f"m{i}", "sub-0", "/queue/x"))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def messages(self) -> AsyncIterator[Delivery]:
        while not self.queue.empty():
            yield self.queue.get_nowait()

    async def ack(self, delivery: Delivery) -> None:
        self.settled.append(("ack", delivery.message_id))

    async def nack(self, delivery: Delivery) -> None:
        self.settled.append(("nack", delivery.message_id))
        self.queue.put_nowait(
            Delivery(
                delivery.headers,
                delivery.body,
                delivery.message_id,
                delivery.subscription,
                attempt=delivery.attempt + 1,
            )
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self.fail_dead_letter:
            self.fail_dead_letter -= 1
            raise ConnectionError("broker gone")
        self.settled.append(("dead_letter", delivery.message_id))


async def run_all(intake: Intake) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await intake.run()


async def test_resolver_decides_what_is_a_visualization_task():
    seen: list[Trigger] = []

    async def resolver(trigger: Trigger) -> VisRequest | None:
        seen.append(trigger)
        if trigger.task_id == "2":
            return None  # not an ML task
        if trigger.task_id == "3":
            raise InvalidRequest("task 3 has no MLflow output")
        return VisRequest(trigger.task_id, source=f"rucio:user.x:{trigger.task_id}")

    source = MemorySource([task_status(1), task_status(2), task_status(3), task_status(2)])
    agent = RecordingAgent()
    intake = Intake(source, agent, resolver=resolver)
    await run_all(intake)
    assert [r.source for r in agent.records.values()] == ["rucio:user.x:1"]
    assert source.settled == [("ack", "m0"), ("ack", "m1"), ("dead_letter", "m2"), ("ack", "m3")]
    assert intake.counts[Outcome.SKIPPED] == 1 and intake.counts[Outcome.DUPLICATE] == 1
    assert [t.task_id for t in seen] == ["1", "2", "3"]  # the replay of 2 skipped the resolver


async def test_a_failing_resolver_or_dead_letter_retries_instead_of_losing():
    calls = 0

    async def flaky(trigger: Trigger) -> VisRequest | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("PanDA did not answer")
        return VisRequest(trigger.task_id)

    source = MemorySource([task_status(1), b"garbage"])
    source.fail_dead_letter = 1
    intake = Intake(source, RecordingAgent(), resolver=flaky)
    await run_all(intake)
    assert source.settled == [("nack", "m0"), ("nack", "m1"), ("ack", "m0"), ("dead_letter", "m1")]


async def test_dedup_memory_is_bounded_and_a_broken_hook_is_harmless():
    def hook(delivery: Delivery, outcome: Outcome, detail: str) -> None:
        raise ValueError("metrics are down")

    source = MemorySource([task_status(i) for i in (1, 2, 3, 1)] + [task_status(3)])
    agent = RecordingAgent()
    intake = Intake(source, agent, dedup_size=2, on_outcome=hook)
    await run_all(intake)
    # 1 was forgotten (only 2 and 3 fit), so its replay reached the ledger: EXISTING.
    assert intake.counts[Outcome.EXISTING] == 1 and intake.counts[Outcome.DUPLICATE] == 1
    assert len(agent.records) == 3
    assert [kind for kind, _ in source.settled] == ["ack"] * 5


async def test_a_teardown_message_ends_the_instance_and_is_acked():
    teardown = json.dumps({"msg_type": "vis_teardown", "task_id": "7", "tool": "mlflow"}).encode()
    unknown = json.dumps({"msg_type": "vis_teardown", "task_id": "8"}).encode()
    request = json.dumps({"msg_type": "vis_request", "task_id": "7",
                          "source": "https://files.example.org/a.tgz"}).encode()  # fmt: skip
    source = MemorySource([request, teardown, unknown])
    agent = RecordingAgent()

    async def lookup(key: InstanceKey) -> Instance | None:
        return fake_instance(agent.records[key]) if key in agent.records else None

    # Whose teardown counts is decided on the ledger's record (tests/security/test_message_*).
    intake = Intake(source, agent, instances=lookup)
    await run_all(intake)
    assert agent.log == [("submit", "7"), ("end", "7")]
    assert source.settled == [("ack", "m0"), ("ack", "m1"), ("ack", "m2")]
    assert intake.counts[Outcome.ENDED] == 2


async def test_traffic_not_for_us_is_acked_in_the_receiver_process(activemq_broker, bus, relay):
    """The fast path: ignorable messages never reach the loop, yet all are acked and counted;
    triggers and malformed messages still go the normal way (commit or dead-letter, then ack)."""
    queue_name = f"/queue/{unique('fast')}"
    ignorable = [task_status(i, "running") for i in range(1, 41)]
    fast: list[str] = []
    async with running_intake(
        activemq_broker, queue_name, RecordingAgent(), fast_ignored=fast, relay_queue=relay
    ) as (_source, outcomes):
        await asyncio.to_thread(bus.publish, queue_name, [*ignorable, PANDA_DONE, b"{oops"])
        handled = await collect(outcomes, 2)  # only the trigger and the malformed one arrive
        async with asyncio.timeout(HANG_GUARD):
            while len(fast) < len(ignorable):
                await asyncio.sleep(0.01)  # counted on another thread; polled, bounded
    assert sorted(o.value for _, o, _ in handled) == ["rejected", "submitted"]
    assert len(fast) == len(ignorable)
    await nothing_left(bus, queue_name, relay)


async def test_a_copy_made_twice_by_a_receiver_that_died_makes_one_record(
    activemq_broker, bus, agent
):
    """A receiver process killed after its copy was stored but before the cumulative ACK that
    covers the original: the broker delivers the original again and it is copied again. Played
    here by a stomp.py client that copies as the receiver does and disconnects without acking;
    then the real intake (with no LRU, so the ledger decides) makes one record of two copies."""
    dest, relay = f"/queue/{unique('twice')}", f"/queue/{unique('relay')}"
    await asyncio.to_thread(bus.publish, dest, [task_status(4242)])

    def copy_and_die() -> None:
        dying = Bus(activemq_broker)
        dying.conn.subscribe(dest, "dying", ack="client")
        got_sub, headers, body = dying.received.get(timeout=HANG_GUARD)
        assert got_sub == "dying"
        dying.conn.send(relay, body, headers=relay_headers(headers, "copied"))
        assert dying.receipts.get(timeout=HANG_GUARD) == "copied"
        dying.conn.disconnect()  # no ACK: the original goes back to the queue

    await asyncio.to_thread(copy_and_die)
    async with running_intake(
        activemq_broker, dest, agent, relay_queue=relay, dedup_size=0
    ) as (_, outcomes):
        results = await collect(outcomes, 2)
    assert sorted(o.value for _, o, _ in results) == ["existing", "submitted"]
    assert {d.destination for d, _, _ in results} == {dest}  # both name the original
    assert [r.task_id for r in await agent.ledger.list()] == ["4242"]
    await nothing_left(bus, dest, relay)


async def test_a_relayed_stream_flows_past_a_message_waiting_for_its_commit(activemq_broker, bus):
    """Relayed, the stream is acked cumulatively, yet a message whose commit is stuck holds
    nothing back: with a window of 10, 300 messages after it are all acked (else the broker
    would stop after 10) and the triggers among them committed, while it still waits."""
    dest, relay = f"/queue/{unique('flow')}", f"/queue/{unique('relay')}"
    agent = RecordingAgent()
    agent.gates["1"] = asyncio.Event()
    fast: list[str] = []
    later = [task_status(i, "running") for i in range(100, 400)] + [task_status(2), task_status(3)]
    async with running_intake(
        activemq_broker,
        dest,
        agent,
        fast_ignored=fast,
        relay_queue=relay,
        prefetch=10,
        concurrency=4,  # as the agent runs it; the relay queue's own window is 10 too
    ) as (_, _outcomes):
        await asyncio.to_thread(bus.publish, dest, [task_status(1), *later])
        async with asyncio.timeout(HANG_GUARD):
            await agent.wait_for(2)  # 2 and 3, while 1 is stuck in its commit
            while len(fast) < 300:
                await asyncio.sleep(0.01)  # counted on another thread; polled, bounded
        assert set(agent.records) == {InstanceKey("2"), InstanceKey("3")}
        agent.gates["1"].set()
        async with asyncio.timeout(HANG_GUARD):
            await agent.wait_for(3)
    await nothing_left(bus, dest, relay)


async def test_a_slow_commit_does_not_hold_up_the_messages_behind_it():
    """With concurrency, a message whose commit is stuck waits alone: the others are committed
    and acked meanwhile, and it is acked only once its own commit returns."""
    agent = RecordingAgent()
    agent.gates["1"] = asyncio.Event()
    source = MemorySource([task_status(i) for i in (1, 2, 3, 4)])
    intake = Intake(source, agent, concurrency=4)
    running = asyncio.create_task(intake.run())
    async with asyncio.timeout(HANG_GUARD):
        await agent.wait_for(3)  # 2, 3 and 4 committed while 1 is stuck in its commit
        while len(source.settled) < 3:
            await asyncio.sleep(0)  # the acks follow their commits on the same loop
    assert sorted(source.settled) == [("ack", "m1"), ("ack", "m2"), ("ack", "m3")]
    agent.gates["1"].set()
    async with asyncio.timeout(HANG_GUARD):
        await running
    assert source.settled[-1] == ("ack", "m0") and len(agent.records) == 4
