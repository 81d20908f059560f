"""Wall-clock time for the agent; tests hand the agent a clock they move themselves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class SystemClock:
    """UTC wall time: expiries are compared across processes that share one ledger."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
