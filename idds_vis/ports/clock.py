from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """The one place time-based behaviour reads the time from, so tests can fake it."""

    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...

    async def sleep(self, seconds: float) -> None: ...
