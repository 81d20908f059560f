"""``SqlLedger``: the Ledger port on SQLAlchemy: SQLite (pysqlite in threads of our own),
PostgreSQL (asyncpg). Each method's SQL is a sync function; ``idds_vis.ledger.runner`` says
where it runs and why.

Concurrency: every write is guarded twice. PostgreSQL locks the row it reads (FOR UPDATE, and
SKIP LOCKED when claiming). SQLite has no row locks, so each UPDATE also names the phase it
read (``WHERE ... AND phase IN (...)``); zero rows back means another writer moved the record
first, and the method reads again and re-checks instead of overwriting that move.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from idds_vis.domain.errors import InvalidTransition, VisError
from idds_vis.domain.models import Instance, InstanceKey, PhaseEvent, VisRequest
from idds_vis.domain.naming import is_path_token, new_path_token
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.ledger import ops
from idds_vis.ledger.access import AccessLedgerMixin, insert_audit
from idds_vis.ledger.engine import make_engine
from idds_vis.ledger.rows import EXPIRABLE, to_event, to_instance
from idds_vis.ledger.runner import Runner
from idds_vis.ledger.schema import events, instances
from idds_vis.ledger.shares import ShareLedgerMixin
from idds_vis.ledger.urls import parse_async_url, sqlite_file

if TYPE_CHECKING:
    from idds_vis.ports.ledger import AccessLedger, Ledger, ShareLedger

# Serialises schema creation between processes on PostgreSQL, where two concurrent
# CREATE TABLEs of one name fail instead of waiting. Any key no other code in the database uses.
_SCHEMA_LOCK = 0x1DD5_7150
# SQLite has no such lock: a process that loses the creation race retries and then finds the tables.
_OPEN_ATTEMPTS = 5


class SqlLedger(AccessLedgerMixin, ShareLedgerMixin):
    """The durable record of every request; see ``idds_vis.ports.ledger.Ledger`` (and
    ``AccessLedger`` for the self-service queue, ownership and audit)."""

    def __init__(self, url: str) -> None:
        self._url = parse_async_url(url)
        self._engine = make_engine(self._url)
        self._db = Runner(self._url, self._engine, sqlite_file(self._url) is not None)

    @property
    def url(self) -> str:
        """The async URL in use, password hidden (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> AsyncEngine:
        """Shared with the replicas' lease and claim stores (idds_vis/ledger/leases.py)."""
        return self._engine

    def __repr__(self) -> str:
        return f"SqlLedger({self.url!r})"

    async def open(self) -> None:
        path = sqlite_file(self._url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _OPEN_ATTEMPTS + 1):
            try:
                await self._db.write(_create_schema)
                return
            except DBAPIError:
                if attempt == _OPEN_ATTEMPTS:
                    raise

    async def close(self) -> None:
        await self._db.close()

    async def submit(
        self, request: VisRequest, now: datetime, *, actor: str | None = None,
        detail: str | None = None,
    ) -> tuple[Instance, bool]:  # fmt: skip
        ops.aware("now", now)
        key = request.key
        values = ops.new_row(request, now)

        # One transaction and, for a new record, no read-back: a triggering message waits
        # for this commit before its ack (tests/bench/bench_intake.py).
        def run(conn: Connection) -> tuple[RowMapping | None, bool]:
            row = conn.execute(ops.submit_for(conn), values).mappings().first()
            if row is None:
                return ops.fetch(conn, key), False
            ops.log(conn, key, Phase.REQUESTED, now, attempt=1)
            if actor is not None:
                insert_audit(conn, actor, "start", key, now, 1, detail)
            return row, True

        row, created = await self._db.write(run)
        if row is None:
            # The insert was skipped for the unique name, not the key: a hash collision.
            raise VisError(f"instance name {key.name} is already used by another task")
        return to_instance(row), created

    async def get(self, key: InstanceKey) -> Instance | None:
        row = await self._db.read(ops.fetch, key)
        return to_instance(row) if row is not None else None

    async def get_by_name(self, name: str) -> Instance | None:
        found = await self._instances(select(instances).where(instances.c.name == name))
        return found[0] if found else None

    async def get_by_path(self, segment: str) -> Instance | None:
        """The record whose UI lives at ``/vis/<segment>/``: its path token, or (a record an
        older version made, with no token) its name."""
        if is_path_token(segment):
            query = select(instances).where(instances.c.path_token == segment)
        else:
            query = select(instances).where(
                instances.c.name == segment, instances.c.path_token.is_(None)
            )
        found = await self._instances(query)
        return found[0] if found else None

    async def set_visibility(self, key: InstanceKey, visibility: str, now: datetime) -> Instance:
        ops.aware("now", now)

        def run(conn: Connection) -> RowMapping | None:
            conn.execute(
                update(instances).where(ops.where_key(key))
                .values(visibility=visibility, updated_at=now)
            )  # fmt: skip
            return ops.fetch(conn, key)

        row = await self._db.write(run)
        if row is None:
            raise ops.not_found(key)
        return to_instance(row)

    async def find(
        self, *, task_id: str | None = None, task_name: str | None = None
    ) -> builtins.list[Instance]:
        if (task_id is None) == (task_name is None):
            raise ValueError("find needs exactly one of task_id and task_name")
        column = instances.c.task_id if task_id is not None else instances.c.task_name
        query = (
            select(instances)
            .where(column == (task_id if task_id is not None else task_name))
            .order_by(instances.c.created_at.desc(), instances.c.id.desc())
        )
        return await self._instances(query)

    async def name_task(self, key: InstanceKey, task_name: str) -> Instance:
        def run(conn: Connection) -> RowMapping | None:
            conn.execute(
                update(instances)
                .where(ops.where_key(key), instances.c.task_name.is_(None))
                .values(task_name=task_name)
            )
            return ops.fetch(conn, key)

        row = await self._db.write(run)
        if row is None:
            raise ops.not_found(key)
        return to_instance(row)

    async def list(self, phases: Collection[Phase] | None = None) -> builtins.list[Instance]:
        query = select(instances).order_by(instances.c.created_at, instances.c.id)
        if phases is not None:
            query = query.where(instances.c.phase.in_([p.value for p in phases]))
        return await self._instances(query)

    async def claim(self, now: datetime, claimant: str) -> Instance | None:
        ops.aware("now", now)
        change = {"phase": Phase.RESOLVING.value, "claimed_by": claimant, "updated_at": now}

        def run(conn: Connection) -> Instance | None:
            row = conn.execute(ops.claim_oldest(), change).mappings().first()
            if row is None:
                return None
            inst = to_instance(row)
            ops.log(conn, inst.key, Phase.RESOLVING, now, inst.attempt)
            return inst

        return await self._db.write(run)

    async def transition(
        self,
        key: InstanceKey,
        phase: Phase,
        now: datetime,
        *,
        expect: Collection[Phase] | None = None,
        reason: str | None = None,
        url: str | None = None,
        expires_at: datetime | None = None,
        handle: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> Instance:
        ops.aware("now", now)
        change: dict[str, Any] = {"phase": phase.value, "updated_at": now}
        if reason is not None:
            change["reason"] = reason
        elif phase is Phase.REQUESTED:
            change["reason"] = None  # back in the queue: an old failure reason no longer applies
        if phase is Phase.REQUESTED:
            change["claimed_by"] = None
        if expires_at is not None:
            change["expires_at"] = ops.aware("expires_at", expires_at)
        optional = {"url": url, "handle": handle, "source": source}
        change.update({name: value for name, value in optional.items() if value is not None})
        sources = ops.sources_of(phase, expect)

        def run(conn: Connection) -> Instance:
            # One conditional UPDATE names the phases the record may leave; only when it
            # matches nothing is the record read, to say why (or, if it has meanwhile moved
            # into a phase it may leave, to try again).
            while True:
                row = ops.move_from(conn, key, sources, change)
                if row is not None:
                    inst = to_instance(row)
                    ops.log(conn, key, phase, now, inst.attempt, reason)
                    return inst
                current = ops.fetch(conn, key)
                if current is None:
                    raise ops.not_found(key)
                was = Phase(current["phase"])
                if was not in sources:
                    ops.check(key, was, phase, expect)  # raises: it may not leave ``was``
                    raise AssertionError(f"{was.value} -> {phase.value} passed check")

        return await self._db.write(run)

    async def set_expiry(self, key: InstanceKey, expires_at: datetime, now: datetime) -> Instance:
        ops.aware("expires_at", expires_at)
        ops.aware("now", now)
        stmt = (
            update(instances)
            .where(ops.where_key(key))
            .values(expires_at=expires_at, updated_at=now)
            .returning(*instances.c)
        )
        row = await self._db.write(lambda conn: conn.execute(stmt).mappings().first())
        if row is None:
            raise ops.not_found(key)
        return to_instance(row)

    async def due(self, now: datetime) -> builtins.list[Instance]:
        ops.aware("now", now)
        rows = await self._db.read(lambda conn: conn.execute(_DUE, {"now": now}).mappings().all())
        return [to_instance(row) for row in rows]

    async def next_expiry(self) -> datetime | None:
        value: datetime | None = await self._db.read(lambda conn: conn.execute(_NEXT).scalar())
        return value

    async def history(self, key: InstanceKey) -> builtins.list[PhaseEvent]:
        query = (
            select(events)
            .where(events.c.task_id == key.task_id, events.c.tool == key.tool)
            .order_by(events.c.id)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [to_event(row) for row in rows]

    async def relaunch(self, key: InstanceKey, now: datetime) -> Instance:
        ops.aware("now", now)
        change: dict[str, Any] = {
            "phase": Phase.REQUESTED.value,
            "attempt": instances.c.attempt + 1,
            "url": None,
            "reason": None,
            "expires_at": None,
            "handle": {},
            "claimed_by": None,
            "updated_at": now,
            # A new launch, a new path: a URL handed out for the last one leads nowhere.
            "path_token": new_path_token(key.tool),
        }

        def run(conn: Connection) -> Instance:
            while True:
                current = ops.fetch(conn, key, lock=True)
                if current is None:
                    raise ops.not_found(key)
                was = Phase(current["phase"])
                if was not in TERMINAL:
                    raise InvalidTransition(
                        f"{key.name} is {was.value}: only an expired or failed instance "
                        "can be relaunched"
                    )
                ops.check(key, was, Phase.REQUESTED, None)
                row = ops.move(conn, current["id"], was, change)
                if row is None:
                    continue
                inst = to_instance(row)
                ops.log(conn, key, Phase.REQUESTED, now, inst.attempt)
                return inst

        return await self._db.write(run)

    async def _instances(self, query: Any) -> builtins.list[Instance]:
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [to_instance(row) for row in rows]


# The reaper asks both every time it looks (at least once a second): built once.
_DUE = (
    select(instances)
    .where(
        instances.c.phase.in_([p.value for p in EXPIRABLE]),
        instances.c.expires_at.is_not(None),
        instances.c.expires_at <= bindparam("now", type_=instances.c.expires_at.type),
    )
    .order_by(instances.c.expires_at, instances.c.id)
)
_NEXT = select(func.min(instances.c.expires_at)).where(
    instances.c.phase.in_([p.value for p in EXPIRABLE])
)


def _create_schema(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
    else:
        # The write lock first: the DDL is then one transaction that other openers wait
        # for (busy_timeout), instead of a race they may lose.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    ops.create_schema(conn)


def _implements_the_port(ledger: SqlLedger) -> Ledger:
    # Never called: mypy checks here that SqlLedger satisfies the Ledger protocol.
    return ledger


def _implements_access(ledger: SqlLedger) -> AccessLedger:
    return ledger


def _implements_shares(ledger: SqlLedger) -> ShareLedger:
    return ledger
