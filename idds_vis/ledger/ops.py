"""Statements shared by the ledger's methods; each runs inside the caller's transaction, on the
sync Connection ``idds_vis.ledger.runner`` hands the method."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, inspect, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from idds_vis.domain.errors import InvalidTransition, NotFound
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.naming import new_path_token
from idds_vis.domain.phases import Phase, can_transition, check_transition
from idds_vis.ledger.schema import events, instances, metadata


def aware(what: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got {value.isoformat()}")
    return value


def where_key(key: InstanceKey) -> Any:
    return (instances.c.task_id == key.task_id) & (instances.c.tool == key.tool)


def create_schema(sync_conn: Any) -> None:
    metadata.create_all(sync_conn, checkfirst=True)
    add_missing_columns(sync_conn)
    # create_all checks tables only: a process that died between a CREATE TABLE and its
    # CREATE INDEX would otherwise leave the index missing for good.
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(sync_conn, checkfirst=True)


def add_missing_columns(sync_conn: Any) -> None:
    """Add the nullable columns a newer version introduced to a ledger an older one created
    (create_all never alters an existing table); only nullable columns are ever added later."""
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspect(sync_conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=sync_conn.dialect)
                sync_conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def new_row(request: VisRequest, now: datetime) -> dict[str, Any]:
    """The row of a request that has no record yet."""
    key = request.key
    return {
        "task_id": key.task_id,
        "tool": key.tool,
        "name": key.name,
        "phase": Phase.REQUESTED.value,
        "source": request.source,
        "ttl_seconds": request.ttl.total_seconds(),
        "handle": {},
        "attempt": 1,
        "origin": request.origin,
        "requested_by": request.requested_by,
        "task_name": request.task_name,
        "path_token": new_path_token(key.tool),
        "created_at": now,
        "updated_at": now,
    }


def insert_for(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(instances)
    return sqlite.insert(instances)


def submit_for(conn: Connection) -> ReturningInsert[Any]:
    """INSERT a new record unless its key (or name) has one, returning the row; the values
    are bound per execution (see ``_LOG``)."""
    return _SUBMIT[conn.dialect.name]


# ON CONFLICT DO NOTHING rather than catching IntegrityError: on PostgreSQL a failed statement
# aborts the transaction, and the racing loser must not error.
_SUBMIT = {
    "postgresql": postgresql.insert(instances).on_conflict_do_nothing().returning(*instances.c),
    "sqlite": sqlite.insert(instances).on_conflict_do_nothing().returning(*instances.c),
}


def fetch(
    conn: Connection, key: InstanceKey, *, lock: bool = False
) -> RowMapping | None:
    query = select(instances).where(where_key(key))
    if lock:
        query = query.with_for_update()  # rendered on PostgreSQL only; SQLite relies on move()
    return conn.execute(query).mappings().first()


def move(
    conn: Connection, row_id: int, was: Phase, change: dict[str, Any]
) -> RowMapping | None:
    """Apply ``change`` only if the row is still in phase ``was``; the new row, or None."""
    stmt = (
        update(instances)
        .where(instances.c.id == row_id, instances.c.phase == was.value)
        .values(change)
        .returning(*instances.c)
    )
    return conn.execute(stmt).mappings().first()


def move_from(
    conn: Connection, key: InstanceKey, sources: frozenset[Phase], change: dict[str, Any]
) -> RowMapping | None:
    """Apply ``change`` (plain values only) to the record of ``key`` if its phase is one of
    ``sources``, in one statement; the new row, or None (no record, or another phase)."""
    stmt = _MOVES.get(sources)
    if stmt is None:
        # No .values(): the SET clause comes from the keys bound at execution, so one
        # statement serves every change; its compiled form is cached per key set.
        stmt = _MOVES[sources] = (
            update(instances)
            .where(
                instances.c.task_id == bindparam("key_task_id"),
                instances.c.tool == bindparam("key_tool"),
                # One bound parameter per phase, not an expanding IN: that is re-rendered at
                # every execution, about 6 % of the pipeline's ledger CPU (cProfile).
                instances.c.phase.in_(
                    [bindparam(f"from_{n}", p.value) for n, p in enumerate(sorted(sources))]
                ),
            )
            .returning(*instances.c)
        )
    params = {**change, "key_task_id": key.task_id, "key_tool": key.tool}
    return conn.execute(stmt, params).mappings().first()


_MOVES: dict[frozenset[Phase], ReturningUpdate[Any]] = {}


def sources_of(target: Phase, expect: Collection[Phase] | None) -> frozenset[Phase]:
    """The phases a record may leave for ``target`` (narrowed to ``expect`` if given)."""
    allowed = _ALLOWED_INTO[target]
    return allowed if expect is None else allowed & frozenset(expect)


# Computed once: walking every phase for every transition was 3 % of the agent's loop.
_ALLOWED_INTO = {
    target: frozenset(p for p in Phase if can_transition(p, target)) for target in Phase
}


def claim_oldest() -> ReturningUpdate[Any]:
    """Move the oldest requested record to resolving in one statement; see ``_CLAIM``."""
    return _CLAIM


# PostgreSQL: the subquery locks the row it picks (SKIP LOCKED passes over rows other
# claimants hold), so the outer UPDATE never loses it. SQLite: the UPDATE holds the write lock
# from before the subquery reads. The alias keeps the subquery from correlating to the UPDATE.
_OLDEST = instances.alias("oldest")
_CLAIM = (
    update(instances)
    .where(
        instances.c.id
        == select(_OLDEST.c.id)
        .where(_OLDEST.c.phase == Phase.REQUESTED.value)
        .order_by(_OLDEST.c.created_at, _OLDEST.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        instances.c.phase == Phase.REQUESTED.value,
    )
    .returning(*instances.c)
)


def log(
    conn: Connection,
    key: InstanceKey,
    phase: Phase,
    at: datetime,
    attempt: int,
    reason: str | None = None,
) -> None:
    row = {
        "task_id": key.task_id,
        "tool": key.tool,
        "attempt": attempt,
        "phase": phase.value,
        "at": at,
        "reason": reason,
    }
    conn.execute(_LOG, row)


# Built once, values bound per execution: building ``.values(row)`` each time cost more than
# the statement itself (its cache key is generated from the values; bench_intake.py).
_LOG = events.insert()


def not_found(key: InstanceKey) -> NotFound:
    return NotFound(f"no instance for task {key.task_id} ({key.tool})")


def check(
    key: InstanceKey, current: Phase, target: Phase, expect: Collection[Phase] | None
) -> None:
    if expect is not None and current not in expect:
        wanted = " or ".join(sorted(p.value for p in expect)) or "nothing"
        raise InvalidTransition(
            f"{key.name} is {current.value}, not {wanted}: cannot move it to {target.value}"
        )
    try:
        check_transition(current, target)
    except InvalidTransition as exc:
        raise InvalidTransition(f"{key.name}: {exc}") from None
