"""Several agent replicas on one ledger: who works, who leads, and who picks up after the dead.

Every replica holds a membership lease named after it while its pipeline workers run (they
claim requests with row locks, so each request goes to one replica). One replica at a time
holds the leader lease and runs the reaper, the reconciler, and the recovery of requests whose
claimant's membership lapsed. Both kinds of lease stop their work at once when they cannot be
renewed (``idds_vis.agent.leases``), before they can lapse.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry, Gauge

from idds_vis.agent.claims import ClaimRecovery
from idds_vis.agent.events import EventBus
from idds_vis.agent.leases import LeaseKeeper, Work
from idds_vis.ports import Clock, Deployer
from idds_vis.ports.lease import ClaimStore, LeaseStore, MemberStore

log = logging.getLogger(__name__)

LEADER_LEASE = "idds-vis-leader"
MEMBER_PREFIX = "idds-vis-agent/"
# Membership leases of replicas long gone are deleted after this long (their claims were
# recovered within a lease period of their lapse).
PRUNE_AFTER = 3600.0


@dataclass(frozen=True)
class Coordination:
    """Where replicas' leases and claims live. The leader lease is in the ledger, or a
    Kubernetes Lease in cluster mode; membership and claims are always in the ledger."""

    leader: LeaseStore
    members: MemberStore
    claims: ClaimStore
    ttl: float = 15.0


class Replica:
    def __init__(
        self,
        coordination: Coordination,
        *,
        agent_id: str,
        clock: Clock,
        deployer: Deployer,
        events: EventBus,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.coordination = coordination
        self.agent_id = agent_id
        self.clock = clock
        held = Gauge(
            "idds_vis_lease_held",
            "1 while this replica holds the lease (leader: runs the reaper and reconciler; "
            "member: its workers run)",
            ["lease"],
            registry=registry,
        )
        ttl = coordination.ttl
        self.member = LeaseKeeper(
            coordination.members, MEMBER_PREFIX + agent_id, agent_id, clock=clock, ttl=ttl,
            on_change=lambda on: held.labels("member").set(int(on)),
        )  # fmt: skip
        self.leader = LeaseKeeper(
            coordination.leader, LEADER_LEASE, agent_id, clock=clock, ttl=ttl,
            on_change=lambda on: held.labels("leader").set(int(on)),
        )  # fmt: skip
        self.recovery = ClaimRecovery(
            claims=coordination.claims, deployer=deployer, clock=clock, events=events,
            agent_id=agent_id,
        )  # fmt: skip

    async def run(self, work: Work, lead: Work) -> None:
        """``work`` (the workers) while a member, ``lead`` (reaper, reconciler) while leader."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.member.run(lambda: self._working(work)))
            group.create_task(self.leader.run(lambda: self._leading(lead)))

    async def _working(self, work: Work) -> None:
        # Workers stopped under this replica (a lost lease) left their requests claimed by it.
        await self.recovery.recover_own()
        await work()

    async def _leading(self, lead: Work) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._recover_loop())
            group.create_task(lead())

    async def recover_stopped(self) -> None:
        """Requeue what replicas whose membership lapsed left in flight (the leader's job)."""
        members = self.coordination.members
        await self.recovery.recover_stopped(lambda: members.live_holders(MEMBER_PREFIX))

    async def _recover_loop(self) -> None:
        members = self.coordination.members
        next_prune = self.clock.now()
        while True:
            try:
                await self.recover_stopped()
                if self.clock.now() >= next_prune:
                    await members.prune(MEMBER_PREFIX, PRUNE_AFTER)
                    next_prune = self.clock.now() + timedelta(seconds=PRUNE_AFTER)
            except Exception:
                log.exception("recovering stopped replicas' requests failed; trying again")
            await self.clock.sleep(self.leader.period)


async def keep_running(work: Work, what: str, clock: Clock, pause: float = 1.0) -> None:
    """Run ``work`` again after it fails, so one error (a lost race with the reconciler, a
    database blip) does not cost the lease and a takeover's worth of delay."""
    while True:
        try:
            await work()
        except Exception:
            log.exception("%s failed; starting it again", what)
        await clock.sleep(pause)
