"""Rows to domain objects, and the phase sets the queries filter on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.engine import RowMapping

from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.phases import IN_FLIGHT, Phase

# Phases whose expiry the reaper acts on. A requested or in-flight record can carry an
# expires_at after a restart (a restart never extends a TTL); expiring is already being ended.
EXPIRABLE: frozenset[Phase] = frozenset(IN_FLIGHT | {Phase.REQUESTED, Phase.READY})


def to_instance(row: RowMapping) -> Instance:
    handle: Any = row["handle"]
    return Instance(
        task_id=row["task_id"],
        tool=row["tool"],
        name=row["name"],
        phase=Phase(row["phase"]),
        source=row["source"],
        ttl=timedelta(seconds=row["ttl_seconds"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempt=row["attempt"],
        origin=row["origin"],
        requested_by=row["requested_by"],
        url=row["url"],
        expires_at=row["expires_at"],
        reason=row["reason"],
        handle=dict(handle) if handle else {},
        task_name=row["task_name"],
        path_token=row.get("path_token"),
        visibility=row.get("visibility"),
    )


def to_event(row: RowMapping) -> PhaseEvent:
    return PhaseEvent(
        task_id=row["task_id"],
        tool=row["tool"],
        phase=Phase(row["phase"]),
        at=row["at"],
        reason=row["reason"],
        attempt=row["attempt"],
    )
