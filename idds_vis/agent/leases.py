"""Leader election over a lease store: run some work only while holding a lease.

The holder renews every ``ttl / 3``. A renewal that fails, is refused or does not answer within
that time stops the work at once, two renewals before the lease can lapse, so the work never
runs on two replicas. A replica that does not hold the lease tries again every ``ttl / 3``:
after the holder dies, another takes over within ``ttl + ttl / 3`` (20 s at the default 15 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from idds_vis.ports import Clock
from idds_vis.ports.lease import LeaseStore

log = logging.getLogger(__name__)

Work = Callable[[], Coroutine[Any, Any, None]]


class LeaseKeeper:
    def __init__(
        self,
        store: LeaseStore,
        name: str,
        holder: str,
        *,
        clock: Clock,
        ttl: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.store = store
        self.name = name
        self.holder = holder
        self.clock = clock
        self.ttl = ttl
        self.period = ttl / 3
        self.on_change = on_change
        self.held = False
        # Times the work was started and stopped (taken and lost or given back), for tests.
        self.terms = 0

    async def run(self, work: Work) -> None:
        """Hold the lease and run ``work`` while it is held, until cancelled; then give it back."""
        try:
            while True:
                if await self._renew():
                    await self._hold(work)
                await self.clock.sleep(self.period)
        finally:
            await self._release()

    async def try_once(self) -> bool:
        """One attempt to take (or renew) the lease, outside ``run``."""
        return await self._renew()

    async def _hold(self, work: Work) -> None:
        self._set(True)
        log.info("took the lease %s as %s", self.name, self.holder)
        task = asyncio.create_task(work(), name=f"lease:{self.name}")
        try:
            while True:
                tick = asyncio.create_task(self.clock.sleep(self.period))
                try:
                    await asyncio.wait({task, tick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tick.cancel()
                if task.done():
                    self._log_end(task)
                    # Let another replica take over rather than retrying here at once.
                    await self._release()
                    return
                if not await self._renew():
                    log.warning("lost the lease %s: stopping what it guards", self.name)
                    return
        finally:
            self._set(False)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _renew(self) -> bool:
        try:
            async with asyncio.timeout(self.period):
                return await self.store.try_acquire(self.name, self.holder, self.ttl)
        except Exception as exc:
            log.warning("renewing the lease %s failed: %s", self.name, exc)
            return False

    async def _release(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.period):
                await self.store.release(self.name, self.holder)

    def _set(self, held: bool) -> None:
        self.held = held
        if held:
            self.terms += 1
        if self.on_change is not None:
            self.on_change(held)

    def _log_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            log.warning("the work under the lease %s was cancelled", self.name)
        elif (exc := task.exception()) is not None:
            log.error("the work under the lease %s failed; giving the lease back", self.name,
                      exc_info=exc)  # fmt: skip
        else:
            log.warning("the work under the lease %s ended; giving the lease back", self.name)
