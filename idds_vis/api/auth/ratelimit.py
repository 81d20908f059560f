"""Bursts of requests are limited per identity (per client address before sign-in).

The ``limits`` library (moving window, in memory) rather than a hand-written bucket: no
well-kept aiohttp rate-limit middleware exists, and ``limits`` is the maintained core that
Flask-Limiter and SlowAPI build on, with an asyncio API. Each replica counts its own
requests; behind a load balancer the limit is per replica.
"""

from __future__ import annotations

import math
import time

import limits
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


class RateLimiter:
    def __init__(self, rate: str) -> None:
        try:
            self.item = limits.parse(rate)
        except ValueError as exc:
            raise ValueError(f"rate_limit {rate!r}: {exc} (write it like 120/minute)") from None
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def allow(self, who: str) -> int | None:
        """None when ``who`` may go on, else the seconds until it may try again."""
        if await self._limiter.hit(self.item, who):
            return None
        stats = await self._limiter.get_window_stats(self.item, who)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def close(self) -> None:
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
