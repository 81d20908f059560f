from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from idds_vis.domain.audit import Action
from idds_vis.domain.models import Instance, InstanceKey, PhaseEvent, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.domain.quotas import Admission, Holding, Limits, Waiting
from idds_vis.domain.share_links import Share


class Ledger(Protocol):
    """The durable record of every request, its phases and its teardown schedule.

    Every method commits before it returns: what it returned is durable.
    """

    async def open(self) -> None:
        """Create the schema if it is missing."""
        ...

    async def close(self) -> None: ...

    async def submit(
        self, request: VisRequest, now: datetime, *, actor: str | None = None,
        detail: str | None = None,
    ) -> tuple[Instance, bool]:  # fmt: skip
        """Insert the request unless (task, tool) has a record; return it and whether it is new.

        Safe under concurrency: two racing submits of one key give one record. With ``actor``,
        a new record's ``start`` goes into the audit trail in the same transaction.
        """
        ...

    async def get(self, key: InstanceKey) -> Instance | None: ...

    async def get_by_name(self, name: str) -> Instance | None: ...

    async def find(
        self, *, task_id: str | None = None, task_name: str | None = None
    ) -> builtins.list[Instance]:
        """Every record (any tool) of one task, by id or by PanDA task name; newest first."""
        ...

    async def name_task(self, key: InstanceKey, task_name: str) -> Instance:
        """Record the task name of a record made without it (kept if it already has one)."""
        ...

    async def list(self, phases: Collection[Phase] | None = None) -> list[Instance]: ...

    async def claim(self, now: datetime, claimant: str) -> Instance | None:
        """Move the oldest ``requested`` record to ``resolving`` for this claimant, or None."""
        ...

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
        """Change phase (checked against the state machine and ``expect``) and log the event.

        Raises InvalidTransition when the record is not in an allowed phase any more.
        """
        ...

    async def set_expiry(
        self, key: InstanceKey, expires_at: datetime, now: datetime
    ) -> Instance: ...

    async def due(self, now: datetime) -> builtins.list[Instance]:
        """Live records whose ``expires_at`` has passed."""
        ...

    async def next_expiry(self) -> datetime | None: ...

    async def history(self, key: InstanceKey) -> builtins.list[PhaseEvent]: ...

    async def relaunch(self, key: InstanceKey, now: datetime) -> Instance:
        """Move a terminal record back to ``requested`` (attempt + 1)."""
        ...


@runtime_checkable
class AccessLedger(Protocol):
    """The self-service part of the ledger: the quota queue, task ownership, the audit trail.

    The queue is durable and shared: it survives restarts, and several agents deciding at
    once (one database) never start more than the limits allow.
    """

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
        """Append who did what to which visualization, and when."""
        ...

    async def actions(
        self, key: InstanceKey | None = None, actor: str | None = None
    ) -> builtins.list[Action]:
        """The audit trail, oldest first (of one visualization, or of one actor)."""
        ...

    async def owner_of(self, key: InstanceKey) -> str | None: ...

    async def get_by_path(self, segment: str) -> Instance | None:
        """The record whose UI lives at ``/vis/<segment>/`` (issue 17)."""
        ...

    async def set_visibility(self, key: InstanceKey, visibility: str, now: datetime) -> Instance:
        """Who besides its owners may see the UI (``domain/access.py``)."""
        ...

    async def set_owner(self, key: InstanceKey, owner: str, now: datetime) -> None: ...

    async def owned_by(self, user: str) -> builtins.list[Instance]:
        """Records the user started, or of tasks they own; newest change first."""
        ...

    async def request_start(self, ask: Waiting, limits: Limits, now: datetime) -> Admission:
        """Start the request if it fits the limits, else queue it (FIFO); idempotent."""
        ...

    async def admit_waiting(self, limits: Limits, now: datetime) -> builtins.list[Instance]:
        """Start every waiting request that fits now, oldest first."""
        ...

    async def queue(
        self, limits: Limits, now: datetime, requested_by: str | None = None
    ) -> builtins.list[Waiting]:
        """The waiting requests in order, each with its position and what it waits for."""
        ...

    async def cancel_waiting(self, key: InstanceKey) -> Waiting | None: ...

    async def holdings(self, now: datetime) -> builtins.list[Holding]:
        """Every live record as the quotas count it."""
        ...


@runtime_checkable
class ShareLedger(Protocol):
    """Share links (issue 17, ``domain/share_links.py``): each creation and revocation is
    committed together with its audit entry."""

    async def add_share(self, share: Share, *, attempt: int | None, detail: str) -> Share: ...

    async def get_share(self, share_id: str) -> Share | None: ...

    async def shares_of(self, key: InstanceKey) -> builtins.list[Share]:
        """Every share of one (task, tool), of any launch; newest first."""
        ...

    async def revoke_share(
        self, share_id: str, by: str, now: datetime, *, detail: str
    ) -> Share | None:
        """Mark the share revoked (at once for every later use); None if there is none."""
        ...

    async def purge_shares(self, before: datetime) -> int:
        """Delete the records of shares that ended before ``before`` (their audit stays)."""
        ...
