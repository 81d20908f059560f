"""Tears instances down at ``expires_at``; the schedule is in the ledger, so restarts keep it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from idds_vis.agent import logctx
from idds_vis.agent.events import EventBus
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.domain.errors import InvalidTransition
from idds_vis.domain.models import Instance
from idds_vis.domain.phases import Phase
from idds_vis.ports import Clock, Deployer, Ledger, Recorder

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        *,
        ledger: Ledger,
        deployer: Deployer,
        clock: Clock,
        events: EventBus,
        recorders: Sequence[Recorder] = (),
        max_wait: float = 1.0,
        metrics: AgentMetrics | None = None,
        concurrency: int = 8,
    ) -> None:
        self.ledger = ledger
        self.deployer = deployer
        self.clock = clock
        self.events = events
        self.recorders = recorders
        # Other processes (the CLI's extend/teardown, other agents) change expiries in the
        # ledger: look again at least this often, which bounds lateness on top of the wait.
        self.max_wait = max_wait
        self.metrics = metrics or AgentMetrics()
        # Instances due together are ended side by side: one after the other, each waiting
        # on the deletions before it, a burst of expiries (a batch launched together, a
        # backlog after a leader takeover) started late by the sum of their deletion times.
        self.concurrency = max(1, concurrency)
        self._wake = asyncio.Event()
        self._next_look: datetime | None = None  # None while looking

    def wake(self, expires_at: datetime | None = None) -> None:
        """Look at the ledger again now; given the expiry that changed, only if that is
        before the next look anyway (a launch sets an expiry a day away: nothing to do)."""
        later = self._next_look
        if expires_at is not None and later is not None and expires_at >= later:
            return
        self._wake.set()

    async def run(self) -> None:
        while True:
            # Cleared before the ledger is read, so a wake during the reads is kept.
            self._next_look = None
            self._wake.clear()
            await self.reap_due()
            delay = self.max_wait
            nxt = await self.ledger.next_expiry()
            if nxt is not None:
                delay = min(delay, (nxt - self.clock.now()).total_seconds())
            if delay > 0:
                self._next_look = self.clock.now() + timedelta(seconds=delay)
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that races its timeout, and then the agent never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def reap_due(self) -> list[Instance]:
        """End every instance due now, at most ``concurrency`` at once, earliest expiry first.
        One that fails does not hold up the others; the first error is raised once all ran."""
        due = await self.ledger.due(self.clock.now())
        slots = asyncio.Semaphore(self.concurrency)

        async def one(inst: Instance) -> Instance | None:
            async with slots:
                return await self.expire(inst)

        results = await asyncio.gather(*(one(inst) for inst in due), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Instance)]

    async def expire(self, inst: Instance) -> Instance | None:
        with logctx.bound(**logctx.of(inst)):
            return await self._expire(inst)

    async def _expire(self, inst: Instance) -> Instance | None:
        try:
            inst = await self.ledger.transition(inst.key, Phase.EXPIRING, self.clock.now())
        except InvalidTransition:
            return None  # someone else is ending it, or it already ended
        self.metrics.reaped(inst.expires_at, inst.updated_at)
        self.events.publish(inst)
        return await self.finish(inst)

    async def finish(self, inst: Instance) -> Instance:
        """Delete what runs and mark it expired (also used for an ``expiring`` left by a crash)."""
        with logctx.bound(**logctx.of(inst)):
            return await self._finish(inst)

    async def _finish(self, inst: Instance) -> Instance:
        logctx.update(phase=inst.phase.value)
        await self.deployer.delete(inst)
        try:
            inst = await self.ledger.transition(
                inst.key, Phase.EXPIRED, self.clock.now(), expect={Phase.EXPIRING}
            )
        except InvalidTransition:
            # A reconcile (or another replica) finished the same expiring instance meanwhile:
            # what had to run is gone either way.
            return await self.ledger.get(inst.key) or inst
        self.events.publish(inst)
        for recorder in self.recorders:
            await recorder.record(inst)
        logctx.update(phase=inst.phase.value)
        log.info("%s expired", inst.name)
        return inst
