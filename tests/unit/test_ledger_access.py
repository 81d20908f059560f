"""The ledger's self-service part on SQLite and PostgreSQL: the quota queue (FIFO, durable,
shared by several processes), ownership and the audit trail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.domain.quotas import Limits, Waiting
from idds_vis.ledger import SqlLedger

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ask(task: str, user: str = "Jane Doe", **fields: object) -> Waiting:
    fields.setdefault("ttl", H)
    fields.setdefault("source", f"file:///data/{task}")
    return Waiting(task_id=task, tool="mlflow", requested_by=user, **fields)  # type: ignore[arg-type]


async def end(ledger: SqlLedger, task: str, now: datetime) -> None:
    """Drive a record to expired, as the pipeline and the reaper would."""
    key = InstanceKey(task, "mlflow")
    inst = await ledger.get(key)
    assert inst is not None
    if inst.phase is Phase.REQUESTED:
        await ledger.claim(now, "test")
    await ledger.transition(key, Phase.EXPIRING, now)
    await ledger.transition(key, Phase.EXPIRED, now)


async def test_a_request_within_the_limits_starts_and_is_audited(ledger: SqlLedger) -> None:
    admission = await ledger.request_start(ask("1", owner="Jane Doe", charged_group="atlas"),
                                           Limits(per_user=1), at(0))  # fmt: skip
    assert admission.started and admission.waiting is None
    inst = admission.instance
    assert inst is not None and (inst.phase, inst.requested_by, inst.ttl) == (
        Phase.REQUESTED, "Jane Doe", H)
    assert await ledger.owner_of(inst.key) == "Jane Doe"
    (action,) = await ledger.actions(inst.key)
    assert (action.actor, action.action, action.at, action.attempt) == ("Jane Doe", "start",
                                                                        at(0), 1)  # fmt: skip
    # Asking again returns the live record and changes nothing.
    again = await ledger.request_start(ask("1"), Limits(per_user=1), at(1))
    assert again.instance == inst and not again.started
    assert len(await ledger.actions()) == 1


async def test_over_the_limit_a_request_waits_in_order_and_starts_when_room_frees(
    ledger: SqlLedger,
) -> None:
    limits = Limits(per_user=1)
    await ledger.request_start(ask("1"), limits, at(0))
    second = await ledger.request_start(ask("2"), limits, at(1))
    third = await ledger.request_start(ask("3"), limits, at(2))
    other = await ledger.request_start(ask("9", user="John Smith"), limits, at(3))
    assert other.started  # another user is not held back
    assert second.waiting is not None and third.waiting is not None
    assert (second.waiting.position, third.waiting.position) == (1, 2)
    assert second.waiting.reason == "Jane Doe has 1 live visualization (the limit per user is 1)"
    assert await ledger.get(InstanceKey("2")) is None  # no record while it waits
    # Asking again keeps the place.
    assert (await ledger.request_start(ask("2"), limits, at(4))).waiting.position == 1  # type: ignore[union-attr]

    assert await ledger.admit_waiting(limits, at(5)) == []  # no room yet
    await end(ledger, "1", at(6))
    (started,) = await ledger.admit_waiting(limits, at(7))
    assert (started.task_id, started.phase) == ("2", Phase.REQUESTED)
    assert [w.task_id for w in await ledger.queue(limits, at(7))] == ["3"]
    assert (await ledger.queue(limits, at(7)))[0].position == 1
    actions = [(a.action, a.task_id, a.detail) for a in await ledger.actions(actor="Jane Doe")]
    assert ("start", "2", "from the queue after 6 s") in actions
    assert ("queue", "3", "position 2: Jane Doe has 1 live visualization (the limit per user "
            "is 1)") in actions  # fmt: skip


async def test_a_terminal_record_is_relaunched_through_the_queue(ledger: SqlLedger) -> None:
    limits = Limits(total=1)
    await ledger.request_start(ask("1"), limits, at(0))
    await end(ledger, "1", at(1))
    again = await ledger.request_start(ask("1", user="John Smith", ttl=2 * H), limits, at(2))
    inst = again.instance
    assert again.started and inst is not None
    assert (inst.attempt, inst.phase, inst.requested_by, inst.ttl) == (
        2, Phase.REQUESTED, "John Smith", 2 * H)
    assert [a.action for a in await ledger.actions(inst.key)] == ["start", "relaunch"]


async def test_the_queue_survives_a_restart_and_can_be_cancelled(ledger_url: str) -> None:
    limits = Limits(total=1)
    first = SqlLedger(ledger_url)
    await first.open()
    await first.request_start(ask("1"), limits, at(0))
    await first.request_start(ask("2"), limits, at(1))
    await first.request_start(ask("3"), limits, at(2))
    await first.close()
    restarted = SqlLedger(ledger_url)
    await restarted.open()
    try:
        assert [(w.task_id, w.position) for w in await restarted.queue(limits, at(3))] == [
            ("2", 1), ("3", 2)]
        cancelled = await restarted.cancel_waiting(InstanceKey("2"))
        assert cancelled is not None and cancelled.task_id == "2"
        assert await restarted.cancel_waiting(InstanceKey("2")) is None
        assert [(w.task_id, w.position) for w in await restarted.queue(limits, at(4))] == [
            ("3", 1)]
    finally:
        await restarted.close()


async def test_limits_hold_when_several_processes_decide_at_once(ledger_url: str) -> None:
    """Five ledgers (five engines: like five agent replicas) ask for 12 starts at once with
    room for 3: exactly 3 start, the other 9 wait with positions 1..9."""
    limits = Limits(total=3)
    ledgers = [SqlLedger(ledger_url) for _ in range(5)]
    for one in ledgers:
        await one.open()
    try:
        results = await asyncio.gather(*(
            ledgers[i % 5].request_start(ask(str(i), user=f"user{i}"), limits, at(i))
            for i in range(12)
        ))  # fmt: skip
        started = [r.instance for r in results if r.started]
        assert len(started) == 3
        assert len(await ledgers[0].list()) == 3
        positions = sorted(w.position for w in await ledgers[1].queue(limits, at(20)))
        assert positions == list(range(1, 10))
        # Room for everyone: the queue drains, each request started once.
        again = await asyncio.gather(*(one.admit_waiting(Limits(total=12), at(21))
                                       for one in ledgers))  # fmt: skip
        assert sorted(i.task_id for batch in again for i in batch) == sorted(
            str(i) for i in range(12) if str(i) not in {s.task_id for s in started if s})
        assert len(await ledgers[0].list()) == 12
        assert await ledgers[0].queue(limits, at(22)) == []
    finally:
        for one in ledgers:
            await one.close()


async def test_holdings_count_lifetime_left_and_charged_groups(ledger: SqlLedger) -> None:
    await ledger.request_start(ask("1", ttl=3 * H, charged_group="atlas/ml"), Limits(), at(0))
    key = InstanceKey("1")
    await ledger.claim(at(0), "test")
    for phase in (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
        await ledger.transition(key, phase, at(0))
    await ledger.transition(key, Phase.READY, at(0), url="http://u/", expires_at=at(3 * 3600))
    await ledger.request_start(ask("2", user="John Smith", ttl=2 * H), Limits(), at(0))
    held = sorted(await ledger.holdings(at(3600)), key=lambda h: h.user or "")
    assert [(h.user, h.group, h.remaining) for h in held] == [
        ("Jane Doe", "atlas/ml", 2 * H), ("John Smith", None, 2 * H)]


async def test_owned_by_lists_started_and_owned_records(ledger: SqlLedger) -> None:
    await ledger.request_start(ask("1"), Limits(), at(0))
    await ledger.request_start(ask("2", user="Helen Help", owner="Jane Doe"), Limits(), at(1))
    await ledger.request_start(ask("3", user="John Smith"), Limits(), at(2))
    assert [i.task_id for i in await ledger.owned_by("Jane Doe")] == ["2", "1"]
    await ledger.set_owner(InstanceKey("3"), "Jane Doe", at(3))
    assert await ledger.owner_of(InstanceKey("3")) == "Jane Doe"
    assert {i.task_id for i in await ledger.owned_by("Jane Doe")} == {"1", "2", "3"}
