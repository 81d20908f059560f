"""Waking the pipeline's idle workers: one worker per new request, not all of them.

With an ``asyncio.Event`` every idle worker woke for each request, one of them claimed it and
the rest each paid for a claim that found nothing: a write transaction apiece, nearly two per
request in the intake benchmark (tests/bench/bench_intake.py). ``WorkSignal`` hands each
``notify`` to a single waiter, as a ``Wake`` naming the request it was for.

A notify that finds no waiter (every worker busy, or between an empty claim and its wait) is
kept for the next worker that would wait, so a worker that finishes goes straight on to the
next of a backlog and none is left to the next poll. A kept notify whose request was claimed
another way (by a poll, by another replica) costs one empty claim, no more.

A worker that claims something it was not woken for (at its first look, after a poll, after a
``Wake`` for no request or for another one) notifies once more: there may be more where that
came from (a backlog from before the start, another replica's requests), and the chain of
looks ends at the first empty claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Wake:
    key: Hashable | None  # the request notified, or None: look, there may be more


class WorkSignal:
    def __init__(self) -> None:
        self._kept: deque[Wake] = deque()
        self._waiters: deque[asyncio.Future[Wake]] = deque()

    def notify(self, key: Hashable | None = None) -> None:
        """Wake one waiting worker for ``key``, or keep the wake for the next one to wait."""
        wake = Wake(key)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(wake)
                return
        self._kept.append(wake)

    async def wait(self, timeout: float) -> Wake | None:
        """Until notified, or None once ``timeout`` seconds pass (time to poll)."""
        if self._kept:
            return self._kept.popleft()
        waiter: asyncio.Future[Wake] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        taken = False
        try:
            async with asyncio.timeout(timeout):
                wake = await waiter
            taken = True
            return wake
        except TimeoutError:
            return None
        finally:
            if not waiter.done():
                waiter.cancel()
            elif not taken and not waiter.cancelled():
                # Handed over as the timeout fired or the worker was cancelled: not lost.
                self._kept.appendleft(waiter.result())
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
