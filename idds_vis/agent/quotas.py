"""The quota queue: self-service starts over a limit wait, in order, and start when room frees.

The queue lives in the ledger (``vis_waiting``), so it survives restarts and is shared by every
agent replica on one database; each decision is made under the ledger's quota lock (see
``idds_vis.ledger.access``). Any replica may start waiting requests: ``run`` does so whenever
an instance of its own ends (its event bus) and, for room freed by another replica, at every
poll interval.

Self-service starts (the catalog, permalinks behind a login) are queued, and so are requests
from broker messages (PanDA, iDDS, vis_request) once quotas are set: the intake charges them to
the verified sender, else the PanDA task's owner, else ``message:<origin>``, so publishing
messages is no way around a limit. ``idds-vis request`` (the operator on the agent's host)
starts at once, and counts towards the total like every live instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

from idds_vis.agent.service import Agent
from idds_vis.domain.expiry import check_ttl
from idds_vis.domain.identity import Identity
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.domain.quotas import Admission, Limits, Waiting, capacity, charged_group, check_ask
from idds_vis.ports.ledger import AccessLedger

log = logging.getLogger(__name__)
# Phases after which an instance holds no slot any more (or is about to release it).
_FREES = frozenset(TERMINAL | {Phase.EXPIRING})


class QuotaQueue:
    def __init__(
        self,
        agent: Agent,
        ledger: AccessLedger,
        limits: Limits,
        *,
        poll_interval: float = 5.0,
    ) -> None:
        self.agent = agent
        self.ledger = ledger
        self.limits = limits
        self.poll_interval = poll_interval

    async def request(
        self, request: VisRequest, requester: Identity, owner: str | None
    ) -> Admission:
        """Start ``request`` now if the limits allow, else queue it; idempotent by key.

        Raises ``InvalidRequest`` for a request that could never start (over the lifetime cap
        or the agent's maximum TTL).
        """
        check_ttl(request.ttl, self.agent.max_ttl)
        ask = Waiting(
            task_id=request.task_id,
            tool=request.tool,
            ttl=request.ttl,
            requested_by=requester.user,
            task_name=request.task_name,
            source=request.source,
            origin=request.origin,
            owner=owner,
            charged_group=None if requester.production else charged_group(
                requester.groups, self.limits),
            exempt=requester.production,
        )  # fmt: skip
        check_ask(ask.ask(), self.limits)
        admission = await self.ledger.request_start(ask, self.limits, self.agent.clock.now())
        if admission.started and admission.instance is not None:
            self.agent.notify(admission.instance)
        for inst in admission.also_started:
            self.agent.notify(inst)
        return admission

    async def admit(self) -> list[Instance]:
        """Start what fits now; the records started."""
        started = await self.ledger.admit_waiting(self.limits, self.agent.clock.now())
        for inst in started:
            log.info("started %s of task %s from the queue for %s", inst.tool, inst.task_id,
                     inst.requested_by)  # fmt: skip
            self.agent.notify(inst)
        return started

    async def cancel(self, request: VisRequest, actor: str) -> Waiting | None:
        waiting = await self.ledger.cancel_waiting(request.key)
        if waiting is not None:
            await self.ledger.record_action(actor, "cancel", request.key, self.agent.clock.now(),
                                            detail="taken out of the queue")  # fmt: skip
        return waiting

    async def queue(self, requested_by: str | None = None) -> list[Waiting]:
        return await self.ledger.queue(self.limits, self.agent.clock.now(), requested_by)

    async def capacity(
        self, user: str | None = None, groups: Collection[str] = ()
    ) -> dict[str, Any]:
        now = self.agent.clock.now()
        held = await self.ledger.holdings(now)
        waiting = len(await self.ledger.queue(self.limits, now))
        return capacity(held, self.limits, user=user, groups=groups, waiting=waiting)

    async def run(self) -> None:
        """Start waiting requests as room frees up, until cancelled."""
        events = self.agent.events.subscribe()
        try:
            while True:
                try:
                    await self.admit()
                except Exception:
                    log.exception("starting queued requests failed; trying again later")
                await self._room_freed(events)
        finally:
            self.agent.events.unsubscribe(events)

    async def _room_freed(self, events: asyncio.Queue[Instance]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval):
                while True:
                    inst = await events.get()
                    if inst.phase in _FREES:
                        return
