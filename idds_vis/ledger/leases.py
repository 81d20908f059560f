"""Leases and claims in the ledger, for several agent replicas sharing one database.

A lease is one row (name, holder, expiry) taken or renewed by a single upsert whose condition is
"free, lapsed, or already mine": the database serialises racing upserts of one row, so there is
one winner. Expiry is judged on the database's clock (``statement_timestamp()`` on PostgreSQL,
``julianday('now')`` on SQLite), never on the replicas' own, so their clock skew cannot give a
lease to two holders. Tests may pass a Clock instead, to move time by hand.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, case, cast, delete, extract, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import IN_FLIGHT, Phase
from idds_vis.ledger import ops
from idds_vis.ledger.rows import to_instance
from idds_vis.ledger.schema import instances, leases
from idds_vis.ports.clock import Clock

if TYPE_CHECKING:
    from idds_vis.ports.lease import ClaimStore, MemberStore

_UNIX_EPOCH_JULIAN_DAY = 2440587.5
_IN_FLIGHT = [p.value for p in IN_FLIGHT]


class SqlLeases:
    """The LeaseStore and MemberStore ports on the ledger's database."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock

    def _now(self, conn: AsyncConnection) -> Any:
        if self._clock is not None:
            return literal(self._clock.now().timestamp(), Float)
        if conn.dialect.name == "postgresql":
            # statement_timestamp(): one value per statement, unlike clock_timestamp().
            return cast(extract("epoch", func.statement_timestamp()), Float)
        # SQLite reads 'now' once per statement too.
        return (func.julianday("now") - _UNIX_EPOCH_JULIAN_DAY) * 86400.0

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        async with self._engine.begin() as conn:
            now = self._now(conn)
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            ins = dialect.insert(leases).values(
                name=name, holder=holder, expires_epoch=now + ttl, acquired_epoch=now
            )
            mine = leases.c.holder == ins.excluded.holder
            stmt = ins.on_conflict_do_update(
                index_elements=[leases.c.name],
                set_={
                    "holder": ins.excluded.holder,
                    "expires_epoch": ins.excluded.expires_epoch,
                    "acquired_epoch": case(
                        (mine, leases.c.acquired_epoch), else_=ins.excluded.acquired_epoch
                    ),
                },
                where=or_(mine, leases.c.holder.is_(None), leases.c.expires_epoch < now),
            ).returning(leases.c.name)
            return (await conn.execute(stmt)).first() is not None

    async def release(self, name: str, holder: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(holder=None, expires_epoch=None)
            )

    async def holder(self, name: str) -> str | None:
        """Who holds the lease now (None when free or lapsed): for tests and operators."""
        async with self._engine.connect() as conn:
            query = select(leases.c.holder).where(
                leases.c.name == name, leases.c.expires_epoch >= self._now(conn)
            )
            value: str | None = (await conn.execute(query)).scalar()
        return value

    async def free_all(self) -> int:
        """Free every lease (the number that were held). Only for an agent that knows it is
        alone on this database (the SQLite ledger's OS lock): a held one is then a dead
        agent's, which would otherwise block the leader's work until it lapses."""
        async with self._engine.begin() as conn:
            stmt = update(leases).where(leases.c.holder.is_not(None))
            result = await conn.execute(stmt.values(holder=None, expires_epoch=None))
            return int(result.rowcount or 0)

    async def live_holders(self, prefix: str) -> set[str]:
        async with self._engine.connect() as conn:
            query = select(leases.c.holder).where(
                leases.c.name.startswith(prefix, autoescape=True),
                leases.c.holder.is_not(None),
                leases.c.expires_epoch >= self._now(conn),
            )
            return {str(h) for h in (await conn.execute(query)).scalars()}

    async def prune(self, prefix: str, lapsed_for: float) -> int:
        async with self._engine.begin() as conn:
            stmt = delete(leases).where(
                leases.c.name.startswith(prefix, autoescape=True),
                or_(
                    leases.c.holder.is_(None),
                    leases.c.expires_epoch < self._now(conn) - lapsed_for,
                ),
            )
            return int((await conn.execute(stmt)).rowcount or 0)


class SqlClaims:
    """The ClaimStore port: every change is conditional on the claimant it expects."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def in_flight(self) -> builtins.list[tuple[Instance, str | None]]:
        query = (
            select(instances)
            .where(instances.c.phase.in_(_IN_FLIGHT))
            .order_by(instances.c.created_at, instances.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [(to_instance(row), row["claimed_by"]) for row in rows]

    async def take_over(
        self, key: InstanceKey, claimant: str | None, by: str, now: datetime
    ) -> Instance | None:
        ops.aware("now", now)
        held_by = (
            instances.c.claimed_by.is_(None)
            if claimant is None
            else instances.c.claimed_by == claimant
        )
        stmt = (
            update(instances)
            .where(ops.where_key(key), instances.c.phase.in_(_IN_FLIGHT), held_by)
            .values(claimed_by=by)
            .returning(*instances.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return to_instance(row) if row is not None else None

    async def requeue(
        self, key: InstanceKey, claimant: str, reason: str, now: datetime
    ) -> Instance | None:
        ops.aware("now", now)
        stmt = (
            update(instances)
            .where(
                ops.where_key(key),
                instances.c.phase.in_(_IN_FLIGHT),
                instances.c.claimed_by == claimant,
            )
            .values(phase=Phase.REQUESTED.value, claimed_by=None, reason=reason, updated_at=now)
            .returning(*instances.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
            if row is None:
                return None
            inst = to_instance(row)
            await conn.run_sync(ops.log, key, Phase.REQUESTED, now, inst.attempt, reason)
        return inst


def _implements_the_ports(leases: SqlLeases, claims: SqlClaims) -> tuple[MemberStore, ClaimStore]:
    # Never called: mypy checks here that the classes satisfy the ports.
    return leases, claims
