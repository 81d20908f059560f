"""Recent refusals of permalink starts, for the JSON by task name: a refused start makes no
ledger record, yet the monitor should still be told why there is no visualization."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from idds_vis.api.views import scrub_paths


class Refusals:
    def __init__(self, keep: timedelta = timedelta(minutes=10), size: int = 1000) -> None:
        self._keep = keep
        self._size = size
        self._seen: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def remember(self, task_name: str, reason: str, now: datetime) -> None:
        self._seen.pop(task_name, None)
        self._seen[task_name] = (scrub_paths(reason), now)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def forget(self, task_name: str) -> None:
        self._seen.pop(task_name, None)

    def reason(self, task_name: str, now: datetime) -> str | None:
        """The reason of the last refusal, if it is recent (the task may have finished since)."""
        seen = self._seen.get(task_name)
        if seen is None or now - seen[1] > self._keep:
            return None
        return seen[0]
