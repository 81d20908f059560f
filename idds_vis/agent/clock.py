"""Time for the agent, read from the event loop so a faked loop clock (looptime) fakes it all."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class LoopClock:
    """Wall-clock datetimes that advance with ``loop.time()``.

    Anchored once to the wall clock; afterwards it moves with the loop's monotonic clock, so a
    test that fakes the loop's time fakes TTLs, reaper waits and timestamps together.
    """

    def __init__(self) -> None:
        self._anchor: tuple[float, float] | None = None

    def now(self) -> datetime:
        try:
            loop_now = asyncio.get_running_loop().time()
        except RuntimeError:
            return datetime.now(UTC)
        if self._anchor is None:
            self._anchor = (time.time(), loop_now)
        wall0, loop0 = self._anchor
        return datetime.fromtimestamp(wall0, UTC) + timedelta(seconds=loop_now - loop0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
