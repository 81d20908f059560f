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

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from idds_vis.domain.audit import Action
from idds_vis.domain.errors import VisError
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.naming import new_path_token
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.domain.quotas import Admission, Holding, Limits, Waiting, admissible, blocked
from idds_vis.ledger import ops
from idds_vis.ledger.rows import to_instance
from idds_vis.ledger.runner import Runner
from idds_vis.ledger.schema import audit, instances, locks, ownership, waiting

QUOTA_LOCK = "quota"
# Phases that hold a slot: everything not finished (a requested one will soon run).
HOLDING = [p.value for p in Phase if p not in TERMINAL]


def _insert(conn: Connection, table: Any) -> postgresql.Insert | sqlite.Insert:
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

    _db: Runner

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
        await self._db.write(insert_audit, actor, action, key, now, attempt, detail)

    async def actions(
        self, key: InstanceKey | None = None, actor: str | None = None
    ) -> builtins.list[Action]:
        query = select(audit).order_by(audit.c.id)
        if key is not None:
            query = query.where(_where(audit, key))
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [
            Action(r["at"], r["actor"], r["action"], r["task_id"], r["tool"], r["attempt"],
                   r["detail"])
            for r in rows
        ]

    # -- ownership ----------------------------------------------------------------------------
    async def owner_of(self, key: InstanceKey) -> str | None:
        query = select(ownership.c.owner).where(_where(ownership, key))
        owner: str | None = await self._db.read(lambda conn: conn.execute(query).scalar())
        return owner

    async def set_owner(self, key: InstanceKey, owner: str, now: datetime) -> None:
        """Remember a task's owner (looked up in PanDA) for later checks."""

        def run(conn: Connection) -> None:
            stmt = _insert(conn, ownership).values(
                task_id=key.task_id, tool=key.tool, owner=owner, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["task_id", "tool"],
                    set_={"owner": owner, "updated_at": now},
                )
            )

        await self._db.write(run)

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
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [to_instance(row) for row in rows]

    # -- the quota queue ----------------------------------------------------------------------
    async def request_start(self, ask: Waiting, limits: Limits, now: datetime) -> Admission:
        """Start ``ask`` now if it fits, else queue it; idempotent by (task, tool).

        A live record is returned as it is; a request already waiting keeps its place.
        """
        ops.aware("now", now)
        return await self._db.write(_request_start, ask, limits, now)

    async def admit_waiting(self, limits: Limits, now: datetime) -> builtins.list[Instance]:
        """Start every waiting request that fits now, oldest first; the started records."""
        ops.aware("now", now)

        def run(conn: Connection) -> builtins.list[Instance]:
            _take_lock(conn, now)
            return _admit(conn, limits, now)

        return await self._db.write(run)

    async def queue(
        self, limits: Limits, now: datetime, requested_by: str | None = None
    ) -> builtins.list[Waiting]:
        """The waiting requests in order, with their positions (all, or one requester's)."""
        places = await self._db.read(_places, limits, now)
        return [w for w in places if requested_by is None or w.requested_by == requested_by]

    async def cancel_waiting(self, key: InstanceKey) -> Waiting | None:
        """Take a request out of the queue; the request, or None if it was not waiting."""

        def run(conn: Connection) -> RowMapping | None:
            row = _queued(conn, key)
            if row is not None:
                conn.execute(delete(waiting).where(waiting.c.id == row["id"]))
            return row

        row = await self._db.write(run)
        return _waiting(row) if row is not None else None

    async def holdings(self, now: datetime) -> builtins.list[Holding]:
        """Every live record, as the quotas count it."""
        return await self._db.read(_holdings, now)


def _request_start(conn: Connection, ask: Waiting, limits: Limits, now: datetime) -> Admission:
    key = InstanceKey(ask.task_id, ask.tool)
    _take_lock(conn, now)
    current = ops.fetch(conn, key)
    if current is not None and Phase(current["phase"]) not in TERMINAL:
        return Admission(instance=to_instance(current))
    queued = _queued(conn, key)
    if queued is None:
        values = {
            "task_id": ask.task_id, "tool": ask.tool, "task_name": ask.task_name,
            "source": ask.source, "ttl_seconds": ask.ttl.total_seconds(),
            "origin": ask.origin, "requested_by": ask.requested_by,
            "owner": ask.owner, "charged_group": ask.charged_group,
            "exempt": ask.exempt, "created_at": now,
        }  # fmt: skip
        conn.execute(_insert(conn, waiting).values(values))
    started = _admit(conn, limits, now)
    others = tuple(inst for inst in started if inst.key != key)
    for inst in started:
        if inst.key == key:
            return Admission(instance=inst, started=True, also_started=others)
    place = _position(conn, key, limits, now)
    if queued is None and place is not None:
        insert_audit(conn, ask.requested_by, "queue", key, now, None,
                     f"position {place.position}: {place.reason}")  # fmt: skip
    return Admission(waiting=place, also_started=others)


def insert_audit(
    conn: Connection,
    actor: str,
    action: str,
    key: InstanceKey,
    now: datetime,
    attempt: int | None,
    detail: str | None,
) -> None:
    conn.execute(
        _AUDIT,
        {"at": now, "actor": actor, "action": action, "task_id": key.task_id, "tool": key.tool,
         "attempt": attempt, "detail": detail},
    )  # fmt: skip


_AUDIT = audit.insert()  # built once, values bound per execution (ops._LOG says why)


def _take_lock(conn: Connection, now: datetime) -> None:
    # The insert makes sure the row exists (an UPDATE of no row would lock nothing); the
    # UPDATE then holds it until the commit.
    first = _insert(conn, locks).values(name=QUOTA_LOCK, taken_at=now)
    conn.execute(first.on_conflict_do_nothing())
    conn.execute(update(locks).where(locks.c.name == QUOTA_LOCK).values(taken_at=now))


def _queued(conn: Connection, key: InstanceKey) -> RowMapping | None:
    return (conn.execute(select(waiting).where(_where(waiting, key)))).mappings().first()


def _holdings(conn: Connection, now: datetime) -> list[Holding]:
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
    for row in (conn.execute(query)).mappings():
        if row["expires_at"] is not None:
            remaining = max(timedelta(0), row["expires_at"] - now)
        else:
            remaining = timedelta(seconds=row["ttl_seconds"])
        out.append(Holding(row["requested_by"], row["charged_group"], remaining))
    return out


def _places(conn: Connection, limits: Limits, now: datetime) -> list[Waiting]:
    rows = (conn.execute(select(waiting).order_by(waiting.c.id))).mappings().all()
    held = _holdings(conn, now)
    return [
        _waiting(row, index, blocked(_waiting(row).ask(), held, limits))
        for index, row in enumerate(rows, start=1)
    ]


def _position(
    conn: Connection, key: InstanceKey, limits: Limits, now: datetime
) -> Waiting | None:
    for place in _places(conn, limits, now):
        if (place.task_id, place.tool) == (key.task_id, key.tool):
            return place
    return None


def _admit(conn: Connection, limits: Limits, now: datetime) -> list[Instance]:
    # A waiting request whose UI another intake (a PanDA message, the CLI) has started since
    # has nothing left to wait for.
    live = select(instances.c.id).where(
        instances.c.task_id == waiting.c.task_id,
        instances.c.tool == waiting.c.tool,
        instances.c.phase.in_(HOLDING),
    )
    conn.execute(delete(waiting).where(live.exists()))
    rows = (conn.execute(select(waiting).order_by(waiting.c.id))).mappings().all()
    if not rows:
        return []
    chosen = set(admissible([_waiting(r).ask() for r in rows], _holdings(conn, now),
                            limits))  # fmt: skip
    started = []
    for row in rows:
        if row["id"] not in chosen:
            continue
        ask = _waiting(row)
        inst = _start(conn, ask, now)
        conn.execute(delete(waiting).where(waiting.c.id == ask.id))
        if inst is None:
            continue  # another intake started it meanwhile: it already runs
        _own(conn, inst.key, ask, now)
        waited = now - ask.created_at
        detail = f"from the queue after {int(waited.total_seconds())} s" if waited else None
        action = "relaunch" if inst.attempt > 1 else "start"
        insert_audit(conn, ask.requested_by, action, inst.key, now, inst.attempt, detail)
        started.append(inst)
    return started


def _start(conn: Connection, ask: Waiting, now: datetime) -> Instance | None:
    """A new record, or a terminal one moved back to ``requested``; None if it is live."""
    request = VisRequest(
        task_id=ask.task_id, tool=ask.tool, source=ask.source, ttl=ask.ttl, origin=ask.origin,
        requested_by=ask.requested_by, task_name=ask.task_name,
    )  # fmt: skip
    current = ops.fetch(conn, request.key, lock=True)
    if current is None:
        insert = ops.insert_for(conn).values(ops.new_row(request, now)).on_conflict_do_nothing()
        if (conn.execute(insert.returning(instances.c.id))).first() is None:
            raise VisError(f"instance name {request.key.name} is already used by another task")
        ops.log(conn, request.key, Phase.REQUESTED, now, attempt=1)
        row = ops.fetch(conn, request.key)
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
        # A new launch, a new path (as ledger.relaunch): the last one's URL and share links
        # lead nowhere.
        "path_token": new_path_token(ask.tool),
    }  # fmt: skip
    if ask.source is not None:
        change["source"] = ask.source
    moved = ops.move(conn, current["id"], was, change)
    if moved is None:
        return None  # moved under us (SQLite has no row lock; we hold the write lock anyway)
    inst = to_instance(moved)
    ops.log(conn, inst.key, Phase.REQUESTED, now, inst.attempt)
    return inst


def _own(conn: Connection, key: InstanceKey, ask: Waiting, now: datetime) -> None:
    values = {"owner": ask.owner, "charged_group": ask.charged_group, "updated_at": now}
    stmt = _insert(conn, ownership).values(task_id=key.task_id, tool=key.tool, **values)
    if ask.owner is None:
        values.pop("owner")  # an owner known from an earlier lookup stays
    conn.execute(stmt.on_conflict_do_update(index_elements=["task_id", "tool"],
                                                  set_=values))  # fmt: skip
