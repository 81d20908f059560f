"""The two ledger tables: one row per (task, tool), and the log of every phase it went through."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from idds_vis.ledger.coltypes import UtcDateTime

metadata = MetaData()

instances = Table(
    "vis_instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("name", String(63), nullable=False, unique=True),
    Column("phase", String(16), nullable=False),
    Column("source", Text),
    # Float, not Integer: a TTL read back must equal the one requested, fractions included.
    Column("ttl_seconds", Float, nullable=False),
    Column("url", Text),
    Column("expires_at", UtcDateTime),
    Column("reason", Text),
    Column("handle", JSON, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("origin", String(32), nullable=False),
    Column("requested_by", String),
    Column("task_name", String),  # PanDA task name: what the permalink is keyed by
    Column("claimed_by", String),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("task_id", "tool", name="uq_vis_instances_key"),
    Index("ix_vis_instances_phase_expires", "phase", "expires_at"),
    Index("ix_vis_instances_phase", "phase"),
    Index("ix_vis_instances_task_name", "task_name"),
)

events = Table(
    "vis_phase_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text),
    Index("ix_vis_phase_events_key", "task_id", "tool"),
)
