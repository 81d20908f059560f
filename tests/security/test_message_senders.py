"""Who sent a message: credentials, whose teardown counts, quotas, and PanDA task ids that a
message cannot take first (issue 15, class 5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from idds_vis.agent.intake import Intake, MessageTrust, Outcome
from idds_vis.agent.quotas import QuotaQueue
from idds_vis.agent.resolver import TaskResolver
from idds_vis.agent.service import Agent
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.domain.quotas import Limits
from idds_vis.domain.senders import bearer_headers, hmac_headers, parse_keys
from idds_vis.idds.channel import AgentEndpoint
from idds_vis.ledger import SqlLedger
from idds_vis.ports.source import Delivery
from idds_vis.ports.tasks import PandaTask
from tests.fakes import FakeDeployer, FakeStager, make_agent, wait_for_phase
from tests.security.test_message_sources import MemorySource, RecordingAgent, run_intake

KEYS = {"alice": b"alice-key-0123456789", "mallory": b"mallory-key-987654", "prod": b"prod-key"}
TRUST = MessageTrust(auth="hmac", keys=lambda: KEYS, production_senders=frozenset({"prod"}))
HANG_GUARD = 60.0


def body(msg_type: str, task_id: str, **fields: object) -> bytes:
    if msg_type == "vis_request":
        fields.setdefault("source", "https://files.example.org/mlflow.tgz")  # FakeStager's
    return json.dumps({"msg_type": msg_type, "task_id": task_id, "tool": "mlflow",
                       **fields}).encode()  # fmt: skip


def signed(sender: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    return data, hmac_headers(sender, KEYS[sender], data)


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "sender credential missing"),
        ({"idds-vis-sender": "alice", "idds-vis-signature": "hmac-sha256=00"}, "does not verify"),
        # Signed with mallory's key but claiming to be alice.
        (
            {**hmac_headers("mallory", KEYS["mallory"], b""), "idds-vis-sender": "alice"},
            "does not verify",
        ),
        (hmac_headers("nobody", b"guessed", b""), "does not verify"),
    ],
)
async def test_a_missing_or_bad_credential_is_dead_lettered_with_the_reason(
    headers: dict[str, str], why: str
) -> None:
    data = body("vis_request", "user.alice.train/", source="https://bigpanda.cern.ch/a.tgz")
    messages = MemorySource([(data, headers)])
    agent = RecordingAgent()
    intake = Intake(messages, agent, resolver=TaskResolver(), trust=TRUST, instances=agent.get)
    await run_intake(messages, intake)
    assert agent.records == {}
    assert messages.settled == [("dead_letter", "m0")]
    assert why in messages.reasons["m0"]
    assert KEYS["alice"].decode() not in messages.reasons["m0"]


async def test_a_body_changed_after_signing_is_refused() -> None:
    data = body("vis_request", "user.alice.train/", source="https://bigpanda.cern.ch/a.tgz")
    _, headers = signed("alice", data)
    tampered = data.replace(b"a.tgz", b"b.tgz")
    messages = MemorySource([(tampered, headers)])
    agent = RecordingAgent()
    await run_intake(messages, Intake(messages, agent, trust=TRUST, instances=agent.get))
    assert agent.records == {} and messages.settled == [("dead_letter", "m0")]


async def test_a_signed_request_is_taken_and_its_sender_is_the_requester() -> None:
    messages = MemorySource([signed("alice", body("vis_request", "user.alice.train/"))])
    agent = RecordingAgent()
    intake = Intake(messages, agent, resolver=TaskResolver(), trust=TRUST, instances=agent.get)
    await run_intake(messages, intake)
    assert messages.settled == [("ack", "m0")]
    assert [r.requested_by for r in agent.records.values()] == ["alice"]


async def test_bearer_tokens_are_checked_against_the_keys_file() -> None:
    keys = parse_keys("# senders\nidds-robot: tok-123456\n\nother:tok-abcdef\n")
    trust = MessageTrust(auth="bearer", keys=lambda: keys)
    data = body("vis_request", "user.x.train/")
    messages = MemorySource([(data, bearer_headers("tok-abcdef")), (data, bearer_headers("nope"))])
    agent = RecordingAgent()
    await run_intake(messages, Intake(messages, agent, trust=trust, instances=agent.get))
    assert messages.settled == [("ack", "m0"), ("dead_letter", "m1")]
    assert [r.requested_by for r in agent.records.values()] == ["other"]


def test_the_idds_works_sign_what_they_send(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("alice-key-0123456789\n")
    endpoint = AgentEndpoint.from_env({
        "IDDS_VIS_BROKERS": "127.0.0.1:61613", "IDDS_VIS_API": "http://127.0.0.1:1",
        "IDDS_VIS_SENDER": "alice", "IDDS_VIS_SENDER_KEY_FILE": str(key_file),
    })  # fmt: skip
    data = body("vis_teardown", "7")
    assert endpoint.credential_headers(data) == hmac_headers("alice", KEYS["alice"], data)


# -- teardown: only the requester or the production role ------------------------------------


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Agent, FakeDeployer]]:
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    deployer = FakeDeployer(tmp_path / "ui")
    agent = make_agent(ledger, deployer, FakeStager())
    await agent.start()
    try:
        yield agent, deployer
    finally:
        await agent.stop()
        await ledger.close()


def delivery(message: tuple[bytes, dict[str, str]], number: int = 0) -> Delivery:
    data, headers = message
    return Delivery(headers, data, f"d{number}", "sub-0", "/queue/x")


async def test_a_teardown_from_another_identity_is_ignored_and_the_launch_goes_on(running):
    agent, deployer = running
    events = agent.events.subscribe()
    task = "user.alice.train/"
    deployer.hold[task] = asyncio.Event()  # alice's UI is starting when the teardowns come
    messages = MemorySource()
    intake = Intake(messages, agent, resolver=TaskResolver(), trust=TRUST)
    async with asyncio.timeout(HANG_GUARD):
        request = signed("alice", body("vis_request", task, source="https://x.example/a.tgz"))
        assert await intake.handle(delivery(request)) is Outcome.SUBMITTED
        await wait_for_phase(agent, events, task, {Phase.STARTING})
        teardown = body("vis_teardown", task)
        assert await intake.handle(delivery(signed("mallory", teardown), 1)) is Outcome.IGNORED
        assert await intake.handle(delivery((teardown, {}), 2)) is Outcome.REJECTED  # unsigned
        deployer.hold[task].set()
        ready = await wait_for_phase(agent, events, task, {Phase.READY, Phase.FAILED})
    assert ready.phase is Phase.READY and ready.requested_by == "alice"
    assert ("ack", "d1") in messages.settled and ("dead_letter", "d2") in messages.settled


@pytest.mark.parametrize("sender", ["alice", "prod"])
async def test_the_requester_or_the_production_role_may_end_a_launch(running, sender: str):
    agent, deployer = running
    events = agent.events.subscribe()
    task = "user.alice.train/"
    deployer.hold[task] = asyncio.Event()
    intake = Intake(MemorySource(), agent, resolver=TaskResolver(), trust=TRUST)
    async with asyncio.timeout(HANG_GUARD):
        await intake.handle(delivery(signed("alice", body("vis_request", task))))
        await wait_for_phase(agent, events, task, {Phase.STARTING})
        outcome = await intake.handle(delivery(signed(sender, body("vis_teardown", task)), 1))
        assert outcome is Outcome.ENDED
        deployer.hold[task].set()
        # The teardown set its expiry to now: the launch may still reach ready first, then the
        # reaper ends it (waiting for "ready or expired" raced the reaper). Not honoured, it
        # would stay ready and the hang guard fails the test.
        done = await wait_for_phase(agent, events, task, {Phase.EXPIRED})
    assert done.phase is Phase.EXPIRED


async def test_without_message_auth_a_teardown_cannot_end_what_the_operator_started(running):
    agent, deployer = running
    events = agent.events.subscribe()
    task = "4242"
    deployer.hold[task] = asyncio.Event()
    await agent.submit(VisRequest(task, source="https://x.example/a.tgz", origin="cli"))
    await wait_for_phase(agent, events, task, {Phase.STARTING})
    intake = Intake(MemorySource(), agent)
    async with asyncio.timeout(HANG_GUARD):
        assert await intake.handle(delivery((body("vis_teardown", task), {}))) is Outcome.IGNORED
        deployer.hold[task].set()
        ready = await wait_for_phase(agent, events, task, {Phase.READY, Phase.EXPIRED})
    assert ready.phase is Phase.READY


# -- quotas ---------------------------------------------------------------------------------


async def test_requests_from_messages_count_against_quotas(running) -> None:
    agent, _deployer = running
    assert isinstance(agent.ledger, SqlLedger)
    queue = QuotaQueue(agent, agent.ledger, Limits(per_user=1, total=5))
    intake = Intake(MemorySource(), agent, resolver=TaskResolver(), trust=TRUST, quotas=queue)
    first = signed("alice", body("vis_request", "user.alice.a/"))
    second = signed("alice", body("vis_request", "user.alice.b/"))
    other = signed("mallory", body("vis_request", "user.mallory.a/"))
    assert await intake.handle(delivery(first)) is Outcome.SUBMITTED
    assert await intake.handle(delivery(second, 1)) is Outcome.QUEUED
    assert await intake.handle(delivery(other, 2)) is Outcome.SUBMITTED
    waiting = await queue.queue()
    assert [(w.task_id, w.requested_by, w.origin) for w in waiting] == [
        ("user.alice.b/", "alice", "vis_request")
    ]
    assert await agent.ledger.get(InstanceKey("user.alice.b/")) is None


async def test_unsigned_messages_share_one_quota(running) -> None:
    agent, _deployer = running
    assert isinstance(agent.ledger, SqlLedger)
    queue = QuotaQueue(agent, agent.ledger, Limits(per_user=1))
    intake = Intake(MemorySource(), agent, quotas=queue)
    assert await intake.handle(delivery((body("vis_request", "a"), {}))) is Outcome.SUBMITTED
    assert await intake.handle(delivery((body("vis_request", "b"), {}), 1)) is Outcome.QUEUED
    assert [w.requested_by for w in await queue.queue()] == ["message:vis_request"]


# -- a PanDA task id cannot be taken first ---------------------------------------------------


class Panda:
    async def task(self, task_id: int, details: bool = False) -> PandaTask | None:
        return None


@pytest.mark.parametrize(("sender", "kept"), [(None, False), ("alice", True)])
async def test_an_unverified_message_cannot_name_the_source_of_a_panda_task(
    sender: str | None, kept: bool
) -> None:
    """With PanDA configured the agent finds a PanDA task's artefacts itself: an unverified
    message's source for a PanDA task id is dropped, so whoever publishes first cannot put
    their data behind a real task; the record then resolves through PanDA like the
    automatic path's."""
    data = body("vis_request", "4242", source="https://evil.example/fake.tgz")
    message = signed(sender, data) if sender else (data, {})
    trust = TRUST if sender else MessageTrust()
    messages = MemorySource([message])
    agent = RecordingAgent()
    resolver = TaskResolver(panda=Panda())  # type: ignore[arg-type]
    await run_intake(messages, Intake(messages, agent, resolver=resolver, trust=trust))
    (record,) = agent.records.values()
    assert record.source == ("https://evil.example/fake.tgz" if kept else None)


async def test_an_unreadable_keys_file_retries_the_message_rather_than_losing_it() -> None:
    def unreadable() -> dict[str, bytes]:
        raise OSError("permission denied")

    messages = MemorySource()
    agent = RecordingAgent()
    intake = Intake(messages, agent, trust=MessageTrust(auth="hmac", keys=unreadable))
    data = body("vis_request", "user.alice.train/")
    assert await intake.handle(delivery(signed("alice", data))) is Outcome.RETRY
    assert messages.settled == [("nack", "d0")] and agent.records == {}


def test_a_senders_secret_alone_is_among_the_secrets_logs_leave_out(tmp_path) -> None:
    from idds_vis.runtime.config import Settings

    keys = tmp_path / "senders.keys"
    keys.write_text("idds-prod:s3cr3t-hmac-key-77\nrobot:another-key-99\n")
    secrets = Settings(state_dir=tmp_path, message_auth_keys_file=str(keys)).secrets()
    assert "s3cr3t-hmac-key-77" in secrets and "another-key-99" in secrets
