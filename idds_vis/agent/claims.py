"""Hands the in-flight requests of a replica that stopped back to the queue.

A pipeline worker claims a request as ``<agent id>/<worker>``. When that agent's membership
lease has lapsed (it died, or lost the database) nobody drives its requests any more: the lease
holder takes each over (a conditional update, so a replica that is in fact alive keeps it),
removes whatever it had started, and puts it back to ``requested`` for any worker to claim.
The same runs on a replica's own claims when its workers were stopped under it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from idds_vis.agent import logctx
from idds_vis.agent.events import EventBus
from idds_vis.domain.models import Instance
from idds_vis.ports import Clock, Deployer
from idds_vis.ports.lease import ClaimStore

log = logging.getLogger(__name__)


def agent_of(claimant: str | None) -> str | None:
    """``host:pid:token/3`` -> ``host:pid:token``."""
    return claimant.rsplit("/", 1)[0] if claimant else None


class ClaimRecovery:
    def __init__(
        self,
        *,
        claims: ClaimStore,
        deployer: Deployer,
        clock: Clock,
        events: EventBus,
        agent_id: str,
    ) -> None:
        self.claims = claims
        self.deployer = deployer
        self.clock = clock
        self.events = events
        self.agent_id = agent_id
        # While this replica removes what a stopped one started, the request is claimed by it.
        self.claimant = f"{agent_id}/recovering"

    async def recover_stopped(
        self, live_agents: Callable[[], Awaitable[set[str]]]
    ) -> list[Instance]:
        """Requeue every in-flight request whose claimant's agent holds no membership lease.

        Who is alive is read after the claims: an agent that claimed something since was alive
        when it did (workers run only under a held membership lease), so it is not mistaken
        for a stopped one.
        """
        claims = await self.claims.in_flight()
        alive = await live_agents()
        return await self._recover(claims, lambda agent: agent not in alive)

    async def recover_own(self) -> list[Instance]:
        """Requeue this agent's own claims (its workers were stopped and start again)."""
        claims = await self.claims.in_flight()
        return await self._recover(claims, lambda agent: agent == self.agent_id)

    async def _recover(
        self, claims: list[tuple[Instance, str | None]], stopped: Callable[[str | None], bool]
    ) -> list[Instance]:
        # Requests this replica took over but did not finish requeueing (its deployer failed)
        # are tried again too.
        done = []
        for inst, claimant in claims:
            if claimant != self.claimant and not stopped(agent_of(claimant)):
                continue
            with logctx.bound(**logctx.of(inst)):
                requeued = await self._requeue(inst, claimant)
            if requeued is not None:
                done.append(requeued)
        return done

    async def _requeue(self, inst: Instance, claimant: str | None) -> Instance | None:
        if claimant != self.claimant:
            taken = await self.claims.take_over(inst.key, claimant, self.claimant, self.clock.now())
            if taken is None:
                return None  # its claimant moved it on after all
            inst = taken
        await self.deployer.delete(inst)
        requeued = await self.claims.requeue(
            inst.key,
            self.claimant,
            # The reason a lone agent's start-up reconcile gives: one message for one cause.
            f"the agent restarted during {inst.phase.value}; starting again",
            self.clock.now(),
        )
        if requeued is not None:
            log.warning("%s was left %s by %s; requeued", inst.name, inst.phase.value,
                        claimant or "no agent")  # fmt: skip
            self.events.publish(requeued)
        return requeued
