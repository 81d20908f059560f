"""What several agent replicas coordinate through: leases, and the claims they hold on requests."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from idds_vis.domain.models import Instance, InstanceKey


class LeaseStore(Protocol):
    """Named leases with one holder each, which lapse unless renewed.

    Expiry is judged on one clock for every replica (the database's, or a Kubernetes Lease
    watched for change on each replica's own clock), never by comparing replicas' clocks.
    """

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease if it is free or lapsed, or renew it if ``holder`` holds it, for
        ``ttl`` seconds; True when ``holder`` holds it now. Atomic: one winner per lease."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it, so another may take it at once."""
        ...


class MemberStore(LeaseStore, Protocol):
    """Leases that say which replicas are alive (one per replica, named after it)."""

    async def live_holders(self, prefix: str) -> set[str]:
        """Holders of the leases named ``prefix…`` that have not lapsed."""
        ...

    async def prune(self, prefix: str, lapsed_for: float) -> int:
        """Delete leases named ``prefix…`` that lapsed over ``lapsed_for`` seconds ago."""
        ...


class ClaimStore(Protocol):
    """The claims pipeline workers hold on in-flight requests (``claimed_by``: ``<agent>/<n>``).

    Every change names the claimant it expects, so two replicas can never both act on one
    request: a change whose claimant moved in the meantime changes nothing and returns None.
    """

    async def in_flight(self) -> list[tuple[Instance, str | None]]:
        """Records a pipeline worker owns (resolving … starting), with their claimant."""
        ...

    async def take_over(
        self, key: InstanceKey, claimant: str | None, by: str, now: datetime
    ) -> Instance | None:
        """Make ``by`` the claimant of an in-flight record still claimed by ``claimant``."""
        ...

    async def requeue(
        self, key: InstanceKey, claimant: str, reason: str, now: datetime
    ) -> Instance | None:
        """Put an in-flight record claimed by ``claimant`` back to ``requested`` (logged)."""
        ...


class Watch(Protocol):
    def close(self) -> None: ...


class WatchObserver(Protocol):
    """Told about each long-lived watch (e.g. of a UI's pods), so readiness can tell a watch
    that went silent past its timeout from a quiet but healthy one."""

    def opened(self, what: str, timeout: float) -> Watch:
        """A watch on ``what`` opened; a healthy one delivers an event or is ended by the
        server within ``timeout`` seconds, and is closed then."""
        ...
