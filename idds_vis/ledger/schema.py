"""The ledger tables: one row per (task, tool), the log of every phase it went through, and the
self-service tables (queue, ownership, audit, the quota lock)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
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
    # Issue 17 (nullable: added to older ledgers by ops.add_missing_columns). The random path
    # segment of the UI (new with each launch; NULL on older rows: their name-derived path),
    # and who besides its owners may see it (domain/access.py; NULL: private).
    Column("path_token", String(64)),
    Column("visibility", Text),
    UniqueConstraint("task_id", "tool", name="uq_vis_instances_key"),
    Index("ix_vis_instances_phase_expires", "phase", "expires_at"),
    Index("ix_vis_instances_phase", "phase"),
    Index("ix_vis_instances_task_name", "task_name"),
    Index("ix_vis_instances_path_token", "path_token", unique=True),
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

# Leases of several agent replicas (idds_vis/ledger/leases.py): who runs the reaper and the
# reconciler, and which replicas are alive. Times are epoch seconds on the DATABASE's clock
# (floats: the same arithmetic on SQLite and PostgreSQL), so replicas' clocks never meet.
leases = Table(
    "vis_leases",
    metadata,
    Column("name", String(253), primary_key=True),
    Column("holder", String),
    Column("expires_epoch", Float),
    Column("acquired_epoch", Float),
)

# --- Self-service (issue 6): the queue of requests over a quota, who owns and is charged for
# each instance, the audit trail, and the row that serialises quota decisions across agents.

waiting = Table(
    "vis_waiting",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # the queue's order
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("task_name", String),
    Column("source", Text),
    Column("ttl_seconds", Float, nullable=False),
    Column("origin", String(32), nullable=False),
    Column("requested_by", String, nullable=False),
    Column("owner", String),
    Column("charged_group", String),
    Column("exempt", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("task_id", "tool", name="uq_vis_waiting_key"),
)

ownership = Table(
    "vis_ownership",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("owner", String),  # the PanDA task's userName
    Column("charged_group", String),  # the group whose quota the instance counts against
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("task_id", "tool", name="uq_vis_ownership_key"),
)

audit = Table(
    "vis_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String, nullable=False),
    Column("action", String(16), nullable=False),
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("attempt", Integer),
    Column("detail", Text),
    Index("ix_vis_audit_key", "task_id", "tool"),
    Index("ix_vis_audit_actor", "actor"),
)

locks = Table(
    "vis_locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("taken_at", UtcDateTime),
)

# Share links (issue 17, domain/share_links.py): one row per link, bound to one launch of a UI
# (its path token). The link's token itself is never stored, only its SHA-256.
shares = Table(
    "vis_shares",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("task_id", String, nullable=False),
    Column("tool", String(16), nullable=False),
    Column("path_token", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_by", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("revoked_by", String),
    Column("label", Text),
    Index("ix_vis_shares_key", "task_id", "tool"),
)
