"""SqlLedger on SQLite (a temp file) and on PostgreSQL (a fresh database on the test server)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio

from idds_vis.domain.errors import InvalidTransition, NotFound
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import HAPPY_PATH, Phase
from idds_vis.ledger import SqlLedger, async_url
from idds_vis.ports.ledger import Ledger

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(task: str, **fields: object) -> VisRequest:
    fields.setdefault("source", f"file:///data/{task}")
    return VisRequest(task_id=task, **fields)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def other(ledger: SqlLedger, ledger_url: str) -> AsyncIterator[SqlLedger]:
    """A second ledger on the same database, with its own engine: like another process."""
    second = SqlLedger(ledger_url)
    await second.open()
    yield second
    await second.close()


async def walk(ledger: SqlLedger, key: InstanceKey, phases: list[Phase], start: float) -> None:
    """Move ``key`` through ``phases``, one second apart from ``start``."""
    for step, phase in enumerate(phases):
        await ledger.transition(key, phase, at(start + step))


# --- URLs and the port -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///var/ledger.db", "sqlite+aiosqlite:///var/ledger.db"),
        ("sqlite:////abs/ledger.db", "sqlite+aiosqlite:////abs/ledger.db"),
        ("sqlite+aiosqlite:///l.db", "sqlite+aiosqlite:///l.db"),
        ("postgresql://u:pw@db:5432/vis", "postgresql+asyncpg://u:pw@db:5432/vis"),
        ("postgres://u@db/vis", "postgresql+asyncpg://u@db/vis"),
        ("postgresql+psycopg2://u@db/vis", "postgresql+asyncpg://u@db/vis"),
        ("postgresql+asyncpg://u@db/vis", "postgresql+asyncpg://u@db/vis"),
        ("/srv/idds-vis/ledger.db", "sqlite+aiosqlite:////srv/idds-vis/ledger.db"),
    ],
)
def test_async_url_maps_to_async_drivers(given: str, expected: str) -> None:
    assert async_url(given) == expected


def test_async_url_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="unsupported ledger URL"):
        async_url("mysql://u:secret@db/vis")


def test_repr_hides_the_password() -> None:
    assert "secret" not in repr(SqlLedger("postgresql://u:secret@db/vis"))


def _params(method: object) -> list[tuple[str, object, object]]:
    # Names, kinds and defaults only: the annotations are strings spelled differently.
    params = inspect.signature(method).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in params]


def test_sql_ledger_has_the_ports_methods_and_parameters() -> None:
    for name, member in vars(Ledger).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        assert _params(getattr(SqlLedger, name)) == _params(member), name


# --- submit, get, list -----------------------------------------------------------------------


async def test_submit_creates_once_and_then_returns_the_existing_record(ledger: SqlLedger) -> None:
    ttl = timedelta(hours=1, seconds=0.5)
    first, created = await ledger.submit(
        request("user.a/1", ttl=ttl, origin="stomp", requested_by="alice"), at(0)
    )
    assert created
    assert (first.phase, first.name, first.attempt) == (Phase.REQUESTED, first.key.name, 1)
    assert (first.ttl, first.origin, first.requested_by) == (ttl, "stomp", "alice")
    assert (first.created_at, first.updated_at, first.handle) == (at(0), at(0), {})

    again, created = await ledger.submit(
        request("user.a/1", ttl=timedelta(hours=5), source="elsewhere"), at(10)
    )
    assert not created
    assert again == first
    assert [(e.phase, e.at) for e in await ledger.history(first.key)] == [(Phase.REQUESTED, at(0))]


async def test_concurrent_submits_from_two_ledgers_make_one_record(
    ledger: SqlLedger, other: SqlLedger
) -> None:
    req = request("race")
    results = await asyncio.gather(
        *(ledger.submit(req, at(i)) if i % 2 else other.submit(req, at(i)) for i in range(20))
    )
    assert sum(created for _, created in results) == 1
    assert {inst.created_at for inst, _ in results} == {results[0][0].created_at}
    assert [i.task_id for i in await ledger.list()] == ["race"]
    assert len(await other.history(req.key)) == 1


async def test_get_get_by_name_and_list(ledger: SqlLedger) -> None:
    for n, task in enumerate(["zeta", "alpha", "mid"]):
        await ledger.submit(request(task), at(n))
    await ledger.transition(InstanceKey("alpha"), Phase.RESOLVING, at(5))

    assert [i.task_id for i in await ledger.list()] == ["zeta", "alpha", "mid"]
    assert [i.task_id for i in await ledger.list({Phase.REQUESTED})] == ["zeta", "mid"]
    assert [i.task_id for i in await ledger.list([Phase.RESOLVING, Phase.READY])] == ["alpha"]
    assert await ledger.list([]) == []

    alpha = await ledger.get(InstanceKey("alpha"))
    assert alpha is not None and alpha.phase is Phase.RESOLVING
    assert await ledger.get_by_name(alpha.name) == alpha
    assert await ledger.get(InstanceKey("alpha", tool="other")) is None
    assert await ledger.get_by_name("mlflow-nothing-00000000") is None


# --- claim -----------------------------------------------------------------------------------


async def test_claim_takes_the_oldest_request_and_logs_it(ledger: SqlLedger) -> None:
    assert await ledger.claim(at(0), "w1") is None
    for n, task in enumerate(["first", "second"]):
        await ledger.submit(request(task), at(n))

    claimed = await ledger.claim(at(10), "w1")
    assert claimed is not None
    assert (claimed.task_id, claimed.phase, claimed.updated_at) == (
        "first",
        Phase.RESOLVING,
        at(10),
    )
    events = [(e.phase, e.at) for e in await ledger.history(claimed.key)]
    assert events == [(Phase.REQUESTED, at(0)), (Phase.RESOLVING, at(10))]

    nxt = await ledger.claim(at(11), "w1")
    assert nxt is not None and nxt.task_id == "second"
    assert await ledger.claim(at(12), "w1") is None


async def test_concurrent_claims_take_each_request_exactly_once(
    ledger: SqlLedger, other: SqlLedger
) -> None:
    tasks = [f"t{n:02d}" for n in range(10)]
    for n, task in enumerate(tasks):
        await ledger.submit(request(task), at(n))

    claims = [side.claim(at(100), f"w{i}") for i in range(8) for side in (ledger, other)]
    got = [inst for inst in await asyncio.gather(*claims) if inst is not None]

    assert sorted(inst.task_id for inst in got) == tasks
    assert [i.phase for i in await ledger.list()] == [Phase.RESOLVING] * len(tasks)
    for task in tasks:
        phases = [e.phase for e in await ledger.history(InstanceKey(task))]
        assert phases == [Phase.REQUESTED, Phase.RESOLVING]


# --- transition ------------------------------------------------------------------------------


async def test_happy_path_stores_fields_and_history(ledger: SqlLedger) -> None:
    inst, _ = await ledger.submit(request("happy"), at(0))
    key = inst.key
    await ledger.transition(key, Phase.RESOLVING, at(1))
    await ledger.transition(key, Phase.STAGING, at(2), source="s3://bucket/happy")
    await ledger.transition(key, Phase.DEPLOYING, at(3))
    await ledger.transition(key, Phase.STARTING, at(4), handle={"pid": 42, "port": 5001})
    ready = await ledger.transition(
        key, Phase.READY, at(5), url="http://ui/vis/happy/", expires_at=at(3605)
    )

    assert ready == await ledger.get(key)
    assert ready.phase is Phase.READY
    assert (ready.source, ready.url) == ("s3://bucket/happy", "http://ui/vis/happy/")
    assert ready.expires_at == at(3605)
    assert ready.handle == {"pid": 42, "port": 5001}
    assert (ready.created_at, ready.updated_at) == (at(0), at(5))
    history = await ledger.history(key)
    assert [e.phase for e in history] == list(HAPPY_PATH[:6])
    assert [e.at for e in history] == [at(n) for n in range(6)]
    assert {e.attempt for e in history} == {1}


async def test_a_disallowed_transition_raises_and_changes_nothing(ledger: SqlLedger) -> None:
    inst, _ = await ledger.submit(request("jump"), at(0))
    with pytest.raises(InvalidTransition, match="cannot go from requested to ready"):
        await ledger.transition(inst.key, Phase.READY, at(1), url="http://x/")
    assert await ledger.get(inst.key) == inst
    assert len(await ledger.history(inst.key)) == 1


async def test_an_unexpected_current_phase_raises_and_changes_nothing(ledger: SqlLedger) -> None:
    inst, _ = await ledger.submit(request("moved"), at(0))
    claimed = await ledger.claim(at(1), "w1")
    # Allowed by the state machine from resolving, but the caller believed it was still requested.
    with pytest.raises(InvalidTransition, match="is resolving, not requested"):
        await ledger.transition(inst.key, Phase.FAILED, at(2), expect={Phase.REQUESTED})
    assert await ledger.get(inst.key) == claimed
    assert [e.phase for e in await ledger.history(inst.key)] == [Phase.REQUESTED, Phase.RESOLVING]


async def test_racing_transitions_with_expect_let_exactly_one_win(
    ledger: SqlLedger, other: SqlLedger
) -> None:
    keys = []
    for n in range(6):
        inst, _ = await ledger.submit(request(f"race{n}"), at(n))
        await walk(ledger, inst.key, list(HAPPY_PATH[1:6]), 10)
        keys.append(inst.key)

    moves = [
        side.transition(key, Phase.EXPIRING, at(100), expect={Phase.READY}, reason=name)
        for key in keys
        for side, name in ((ledger, "a"), (other, "b"))
    ]
    results = await asyncio.gather(*moves, return_exceptions=True)

    for key, pair in zip(keys, zip(results[::2], results[1::2], strict=True), strict=True):
        won = [r for r in pair if isinstance(r, Instance)]
        lost = [r for r in pair if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, pair
        assert isinstance(lost[0], InvalidTransition)
        expiring = [e for e in await ledger.history(key) if e.phase is Phase.EXPIRING]
        assert [e.reason for e in expiring] == [won[0].reason]


async def test_reasons_are_kept_and_cleared_on_requeue(ledger: SqlLedger) -> None:
    inst, _ = await ledger.submit(request("requeue"), at(0))
    key = inst.key
    await walk(ledger, key, list(HAPPY_PATH[1:5]), 1)
    ready = await ledger.transition(key, Phase.READY, at(10), url="http://u/", expires_at=at(99))

    # The reconciler requeues with a reason; a restart keeps the expiry (it never extends a TTL).
    again = await ledger.transition(key, Phase.REQUESTED, at(11), reason="the UI was not running")
    assert again.reason == "the UI was not running"
    assert (again.expires_at, again.url) == (at(99), ready.url)
    await ledger.claim(at(12), "w2")
    requeued = await ledger.transition(key, Phase.REQUESTED, at(13))
    assert requeued.reason is None

    failed = await ledger.transition(key, Phase.FAILED, at(14), reason="cluster quota exceeded")
    assert failed.reason == "cluster quota exceeded"
    last = (await ledger.history(key))[-1]
    assert (last.phase, last.reason, last.at) == (Phase.FAILED, "cluster quota exceeded", at(14))


async def test_missing_records_raise_not_found(ledger: SqlLedger) -> None:
    key = InstanceKey("ghost")
    with pytest.raises(NotFound):
        await ledger.transition(key, Phase.RESOLVING, at(0))
    with pytest.raises(NotFound):
        await ledger.set_expiry(key, at(10), at(0))
    with pytest.raises(NotFound):
        await ledger.relaunch(key, at(0))
    assert await ledger.history(key) == []


# --- expiry ----------------------------------------------------------------------------------


async def test_due_and_next_expiry_cover_live_and_queued_records_only(ledger: SqlLedger) -> None:
    assert await ledger.due(at(10**6)) == []
    assert await ledger.next_expiry() is None

    async def make(task: str, phases: list[Phase], expires: float | None) -> InstanceKey:
        inst, _ = await ledger.submit(request(task), at(0))
        if expires is not None:
            await ledger.set_expiry(inst.key, at(expires), at(0))
        await walk(ledger, inst.key, phases, 1)
        return inst.key

    await make("expiring", [Phase.EXPIRING], 5)  # already being torn down
    await make("failed", [Phase.FAILED], 6)  # terminal
    await make("no-expiry", [Phase.RESOLVING, Phase.STAGING], None)
    await make("queued", [], 60)
    await make("staging", [Phase.RESOLVING, Phase.STAGING], 70)
    await make("ready", list(HAPPY_PATH[1:6]), 100)
    late = await make("late", list(HAPPY_PATH[1:6]), 200)

    assert await ledger.next_expiry() == at(60)
    assert [i.task_id for i in await ledger.due(at(59))] == []
    assert [i.task_id for i in await ledger.due(at(99))] == ["queued", "staging"]
    assert [i.task_id for i in await ledger.due(at(100))] == ["queued", "staging", "ready"]
    assert len(await ledger.due(at(10**6))) == 4

    moved = await ledger.set_expiry(late, at(30), at(20))
    assert (moved.expires_at, moved.updated_at, moved.phase) == (at(30), at(20), Phase.READY)
    assert await ledger.next_expiry() == at(30)
    assert [i.task_id for i in await ledger.due(at(30))] == ["late"]


# --- relaunch --------------------------------------------------------------------------------


async def test_relaunch_requeues_a_terminal_record_as_a_new_attempt(ledger: SqlLedger) -> None:
    inst, _ = await ledger.submit(request("again"), at(0))
    key = inst.key
    await walk(ledger, key, list(HAPPY_PATH[1:5]), 1)
    await ledger.transition(key, Phase.READY, at(10), url="http://u/", expires_at=at(20))
    await ledger.transition(key, Phase.FAILED, at(11), reason="the UI vanished")
    with pytest.raises(InvalidTransition):
        await ledger.transition(key, Phase.READY, at(12))

    relaunched = await ledger.relaunch(key, at(13))
    assert relaunched.phase is Phase.REQUESTED
    assert relaunched.attempt == 2
    cleared = (relaunched.url, relaunched.reason, relaunched.expires_at, relaunched.handle)
    assert cleared == (None, None, None, {})
    assert relaunched.created_at == at(0)
    last = (await ledger.history(key))[-1]
    assert (last.phase, last.attempt, last.at) == (Phase.REQUESTED, 2, at(13))

    claimed = await ledger.claim(at(14), "w1")
    assert claimed is not None and (claimed.task_id, claimed.attempt) == ("again", 2)
    with pytest.raises(InvalidTransition, match="only an expired or failed"):
        await ledger.relaunch(key, at(15))

    # A duplicate submit of a finished key returns the record; only relaunch starts it again.
    await ledger.transition(key, Phase.EXPIRING, at(16))
    await ledger.transition(key, Phase.EXPIRED, at(17))
    expired, created = await ledger.submit(request("again"), at(18))
    assert not created and expired.phase is Phase.EXPIRED
    assert (await ledger.relaunch(key, at(19))).attempt == 3


# --- time zones, durability, schema ----------------------------------------------------------


async def test_datetimes_come_back_aware_utc_and_compare_as_instants(ledger: SqlLedger) -> None:
    paris = timezone(timedelta(hours=2))
    chicago = timezone(timedelta(hours=-5))
    local_now = datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=paris)  # 12:00:00.123456 UTC
    inst, _ = await ledger.submit(request("tz"), local_now)
    await ledger.set_expiry(inst.key, datetime(2025, 3, 1, 15, 0, tzinfo=paris), local_now)

    stored = await ledger.get(inst.key)
    assert stored is not None and stored.expires_at is not None
    for value in (stored.created_at, stored.updated_at, stored.expires_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert stored.created_at == local_now
    assert stored.created_at.replace(tzinfo=None) == datetime(2025, 3, 1, 12, 0, 0, 123456)
    assert stored.expires_at == datetime(2025, 3, 1, 13, 0, tzinfo=UTC)
    assert (await ledger.history(inst.key))[0].at.utcoffset() == timedelta(0)
    next_expiry = await ledger.next_expiry()
    assert next_expiry is not None and next_expiry.utcoffset() == timedelta(0)

    # 07:59:59 in Chicago is 12:59:59 UTC: one second before the expiry, so not due yet.
    assert await ledger.due(datetime(2025, 3, 1, 7, 59, 59, tzinfo=chicago)) == []
    assert len(await ledger.due(datetime(2025, 3, 1, 8, 0, 0, tzinfo=chicago))) == 1

    with pytest.raises(ValueError, match="timezone-aware"):
        await ledger.submit(request("naive"), datetime(2025, 3, 1, 12, 0))
    assert await ledger.get(InstanceKey("naive")) is None


async def test_records_survive_closing_and_reopening(ledger: SqlLedger, ledger_url: str) -> None:
    inst, _ = await ledger.submit(request("durable"), at(0))
    await ledger.claim(at(1), "w1")
    before = await ledger.transition(inst.key, Phase.STAGING, at(2), source="file:///x")
    history = await ledger.history(inst.key)
    await ledger.close()

    reopened = SqlLedger(ledger_url)
    await reopened.open()
    try:
        assert await reopened.get(inst.key) == before
        assert await reopened.history(inst.key) == history
        assert await reopened.claim(at(3), "w2") is None
        assert (await reopened.submit(request("durable"), at(4)))[1] is False
    finally:
        await reopened.close()


async def test_open_is_safe_to_run_concurrently_and_again(ledger_url: str) -> None:
    first, second = SqlLedger(ledger_url), SqlLedger(ledger_url)
    try:
        await asyncio.gather(first.open(), second.open(), first.open())
        await second.open()
        _, created = await first.submit(request("schema"), at(0))
        assert created
        assert [i.task_id for i in await second.list()] == ["schema"]
    finally:
        await first.close()
        await second.close()


async def test_a_sqlite_ledger_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.db"
    ledger = SqlLedger(f"sqlite:///{path}")
    try:
        await ledger.open()
        await ledger.submit(request("dir"), at(0))
    finally:
        await ledger.close()
    assert path.is_file()
