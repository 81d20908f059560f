"""The self-service part of ``SqlLedger``: the quota queue, ownership and the audit trail.

Quota decisions are serialised across processes and agent replicas by one row of
``vis_locks``: every deciding transaction first writes it. On PostgreSQL that is a row lock
held to the commit; on SQLite, a write as the first statement takes the database's write lock
before anything is read (so the decision never rests on a stale read). Under the lock the
transaction counts what is held, reads the queue in order, starts what fits (a new record, or
a relaunch of a terminal one), and removes it from the queue, all in one commit: a crash
leaves a request either waiting or started, never both or neither.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from idds_vis.domain.audit import Action
from idds_vis.domain.errors import VisError
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.domain.quotas import Admission, Holding, Limits, Waiting, admissible, blocked
from idds_vis.ledger import ops
from idds_vis.ledger.rows import to_instance
from idds_vis.ledger.schema import audit, instances, locks, ownership, waiting

QUOTA_LOCK = "quota"
# Phases that hold a slot: everything not finished (a requested one will soon run).
HOLDING = [p.value for p in Phase if p not in TERMINAL]


def _insert(conn: AsyncConnection, table: Any) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _waiting(row: RowMapping, position: int = 0, reason: str | None = None) -> Waiting:
    return Waiting(
        task_id=row["task_id"],
        tool=row["tool"],
        ttl=timedelta(seconds=row["ttl_seconds"]),
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        task_name=row["task_name"],
        source=row["source"],
        origin=row["origin"],
        owner=row["owner"],
        charged_group=row["charged_group"],
        exempt=bool(row["exempt"]),
        id=row["id"],
        position=position,
        reason=reason,
    )


def _where(table: Any, key: InstanceKey) -> Any:
    return and_(table.c.task_id == key.task_id, table.c.tool == key.tool)


class AccessLedgerMixin:
    """Mixed into ``SqlLedger``; see ``idds_vis.ports.ledger.AccessLedger``."""

    _engine: AsyncEngine

    # -- audit --------------------------------------------------------------------------------
    async def record_action(
        self,
        actor: str,
        action: str,
        key: InstanceKey,
        now: datetime,
        *,
        attempt: int | None = None,
        detail: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await insert_audit(conn, actor, action, key, now, attempt, detail)

    async def actions(
        self, key: InstanceKey | None = None, actor: str | None = None
    ) -> builtins.list[Action]:
        query = select(audit).order_by(audit.c.id)
        if key is not None:
            query = query.where(_where(audit, key))
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Action(r["at"], r["actor"], r["action"], r["task_id"], r["tool"], r["attempt"],
                   r["detail"])
            for r in rows
        ]

    # -- ownership ----------------------------------------------------------------------------
    async def owner_of(self, key: InstanceKey) -> str | None:
        query = select(ownership.c.owner).where(_where(ownership, key))
        async with self._engine.connect() as conn:
            owner: str | None = (await conn.execute(query)).scalar()
        return owner

    async def set_owner(self, key: InstanceKey, owner: str, now: datetime) -> None:
        """Remember a task's owner (looked up in PanDA) for later checks."""
        async with self._engine.begin() as conn:
            stmt = _insert(conn, ownership).values(
                task_id=key.task_id, tool=key.tool, owner=owner, updated_at=now
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["task_id", "tool"],
                    set_={"owner": owner, "updated_at": now},
                )
            )

    async def owned_by(self, user: str) -> builtins.list[Instance]:
        """Records one person started, or of tasks they own; newest change first."""
        query = (
            select(instances)
            .select_from(instances.outerjoin(ownership, and_(
                ownership.c.task_id == instances.c.task_id,
                ownership.c.tool == instances.c.tool)))
            .where(or_(instances.c.requested_by == user, ownership.c.owner == user))
            .order_by(instances.c.updated_at.desc(), instances.c.id.desc())
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [to_instance(row) for row in rows]

    # -- the quota queue ----------------------------------------------------------------------
    async def request_start(self, ask: Waiting, limits: Limits, now: datetime) -> Admission:
        """Start ``ask`` now if it fits, else queue it; idempotent by (task, tool).

        A live record is returned as it is; a request already waiting keeps its place.
        """
        ops.aware("now", now)
        key = InstanceKey(ask.task_id, ask.tool)
        async with self._engine.begin() as conn:
            await _take_lock(conn, now)
            current = await ops.fetch(conn, key)
            if current is not None and Phase(current["phase"]) not in TERMINAL:
                return Admission(instance=to_instance(current))
            queued = await _queued(conn, key)
            if queued is None:
                values = {
                    "task_id": ask.task_id, "tool": ask.tool, "task_name": ask.task_name,
                    "source": ask.source, "ttl_seconds": ask.ttl.total_seconds(),
                    "origin": ask.origin, "requested_by": ask.requested_by,
                    "owner": ask.owner, "charged_group": ask.charged_group,
                    "exempt": ask.exempt, "created_at": now,
                }  # fmt: skip
                await conn.execute(_insert(conn, waiting).values(values))
            started = await _admit(conn, limits, now)
            others = tuple(inst for inst in started if inst.key != key)
            for inst in started:
                if inst.key == key:
                    return Admission(instance=inst, started=True, also_started=others)
            place = await _position(conn, key, limits, now)
            if queued is None and place is not None:
                await insert_audit(conn, ask.requested_by, "queue", key, now, None,
                             f"position {place.position}: {place.reason}")  # fmt: skip
            return Admission(waiting=place, also_started=others)

    async def admit_waiting(self, limits: Limits, now: datetime) -> builtins.list[Instance]:
        """Start every waiting request that fits now, oldest first; the started records."""
        ops.aware("now", now)
        async with self._engine.begin() as conn:
            await _take_lock(conn, now)
            return await _admit(conn, limits, now)

    async def queue(
        self, limits: Limits, now: datetime, requested_by: str | None = None
    ) -> builtins.list[Waiting]:
        """The waiting requests in order, with their positions (all, or one requester's)."""
        async with self._engine.connect() as conn:
            places = await _places(conn, limits, now)
        return [w for w in places if requested_by is None or w.requested_by == requested_by]

    async def cancel_waiting(self, key: InstanceKey) -> Waiting | None:
        """Take a request out of the queue; the request, or None if it was not waiting."""
        async with self._engine.begin() as conn:
            row = await _queued(conn, key)
            if row is None:
                return None
            await conn.execute(delete(waiting).where(waiting.c.id == row["id"]))
        return _waiting(row)

    async def holdings(self, now: datetime) -> builtins.list[Holding]:
        """Every live record, as the quotas count it."""
        async with self._engine.connect() as conn:
            return await _holdings(conn, now)


async def insert_audit(
    conn: AsyncConnection,
    actor: str,
    action: str,
    key: InstanceKey,
    now: datetime,
    attempt: int | None,
    detail: str | None,
) -> None:
    await conn.execute(
        _AUDIT,
        {"at": now, "actor": actor, "action": action, "task_id": key.task_id, "tool": key.tool,
         "attempt": attempt, "detail": detail},
    )  # fmt: skip


_AUDIT = audit.insert()  # built once, values bound per execution (ops._LOG says why)


async def _take_lock(conn: AsyncConnection, now: datetime) -> None:
    # The insert makes sure the row exists (an UPDATE of no row would lock nothing); the
    # UPDATE then holds it until the commit.
    first = _insert(conn, locks).values(name=QUOTA_LOCK, taken_at=now)
    await conn.execute(first.on_conflict_do_nothing())
    await conn.execute(update(locks).where(locks.c.name == QUOTA_LOCK).values(taken_at=now))


async def _queued(conn: AsyncConnection, key: InstanceKey) -> RowMapping | None:
    return (await conn.execute(select(waiting).where(_where(waiting, key)))).mappings().first()


async def _holdings(conn: AsyncConnection, now: datetime) -> list[Holding]:
    query = (
        select(
            instances.c.requested_by,
            instances.c.expires_at,
            instances.c.ttl_seconds,
            ownership.c.charged_group,
        )
        .select_from(
            instances.outerjoin(
                ownership,
                and_(ownership.c.task_id == instances.c.task_id,
                     ownership.c.tool == instances.c.tool),
            )
        )
        .where(instances.c.phase.in_(HOLDING))
    )
    out = []
    for row in (await conn.execute(query)).mappings():
        if row["expires_at"] is not None:
            remaining = max(timedelta(0), row["expires_at"] - now)
        else:
            remaining = timedelta(seconds=row["ttl_seconds"])
        out.append(Holding(row["requested_by"], row["charged_group"], remaining))
    return out


async def _places(conn: AsyncConnection, limits: Limits, now: datetime) -> list[Waiting]:
    rows = (await conn.execute(select(waiting).order_by(waiting.c.id))).mappings().all()
    held = await _holdings(conn, now)
    return [
        _waiting(row, index, blocked(_waiting(row).ask(), held, limits))
        for index, row in enumerate(rows, start=1)
    ]


async def _position(
    conn: AsyncConnection, key: InstanceKey, limits: Limits, now: datetime
) -> Waiting | None:
    for place in await _places(conn, limits, now):
        if (place.task_id, place.tool) == (key.task_id, key.tool):
            return place
    return None


async def _admit(conn: AsyncConnection, limits: Limits, now: datetime) -> list[Instance]:
    # A waiting request whose UI another intake (a PanDA message, the CLI) has started since
    # has nothing left to wait for.
    live = select(instances.c.id).where(
        instances.c.task_id == waiting.c.task_id,
        instances.c.tool == waiting.c.tool,
        instances.c.phase.in_(HOLDING),
    )
    await conn.execute(delete(waiting).where(live.exists()))
    rows = (await conn.execute(select(waiting).order_by(waiting.c.id))).mappings().all()
    if not rows:
        return []
    chosen = set(admissible([_waiting(r).ask() for r in rows], await _holdings(conn, now),
                            limits))  # fmt: skip
    started = []
    for row in rows:
        if row["id"] not in chosen:
            continue
        ask = _waiting(row)
        inst = await _start(conn, ask, now)
        await conn.execute(delete(waiting).where(waiting.c.id == ask.id))
        if inst is None:
            continue  # another intake started it meanwhile: it already runs
        await _own(conn, inst.key, ask, now)
        waited = now - ask.created_at
        detail = f"from the queue after {int(waited.total_seconds())} s" if waited else None
        action = "relaunch" if inst.attempt > 1 else "start"
        await insert_audit(conn, ask.requested_by, action, inst.key, now, inst.attempt, detail)
        started.append(inst)
    return started


async def _start(conn: AsyncConnection, ask: Waiting, now: datetime) -> Instance | None:
    """A new record, or a terminal one moved back to ``requested``; None if it is live."""
    request = VisRequest(
        task_id=ask.task_id, tool=ask.tool, source=ask.source, ttl=ask.ttl, origin=ask.origin,
        requested_by=ask.requested_by, task_name=ask.task_name,
    )  # fmt: skip
    current = await ops.fetch(conn, request.key, lock=True)
    if current is None:
        insert = ops.insert_for(conn).values(ops.new_row(request, now)).on_conflict_do_nothing()
        if (await conn.execute(insert.returning(instances.c.id))).first() is None:
            raise VisError(f"instance name {request.key.name} is already used by another task")
        await ops.log(conn, request.key, Phase.REQUESTED, now, attempt=1)
        row = await ops.fetch(conn, request.key)
        assert row is not None
        return to_instance(row)
    was = Phase(current["phase"])
    if was not in TERMINAL:
        return None
    change: dict[str, Any] = {
        "phase": Phase.REQUESTED.value, "attempt": instances.c.attempt + 1, "url": None,
        "reason": None, "expires_at": None, "handle": {}, "claimed_by": None, "updated_at": now,
        "ttl_seconds": ask.ttl.total_seconds(), "origin": ask.origin,
        "requested_by": ask.requested_by,
        "task_name": func.coalesce(instances.c.task_name, ask.task_name),
    }  # fmt: skip
    if ask.source is not None:
        change["source"] = ask.source
    moved = await ops.move(conn, current["id"], was, change)
    if moved is None:
        return None  # moved under us (SQLite has no row lock; we hold the write lock anyway)
    inst = to_instance(moved)
    await ops.log(conn, inst.key, Phase.REQUESTED, now, inst.attempt)
    return inst


async def _own(conn: AsyncConnection, key: InstanceKey, ask: Waiting, now: datetime) -> None:
    values = {"owner": ask.owner, "charged_group": ask.charged_group, "updated_at": now}
    stmt = _insert(conn, ownership).values(task_id=key.task_id, tool=key.tool, **values)
    if ask.owner is None:
        values.pop("owner")  # an owner known from an earlier lookup stays
    await conn.execute(stmt.on_conflict_do_update(index_elements=["task_id", "tool"],
                                                  set_=values))  # fmt: skip
