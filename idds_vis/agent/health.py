"""Liveness and readiness of an agent process, for ``/healthz`` and ``/readyz``.

Alive: the event loop is not stalled. A heartbeat task ticks every second; a loop that is
blocked (something synchronous on it) or starved shows as a tick that is late by more than the
threshold. Ready: every registered check passes (the ledger answers, the broker is connected,
no watch has been silent past its timeout, the replica holds its membership lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from idds_vis.agent.service import Agent

# None when the check passes, else the reason, in words an operator can act on.
Check = Callable[[], Awaitable[str | None]]
Monotonic = Callable[[], float]


class Heartbeat:
    def __init__(
        self,
        *,
        interval: float = 1.0,
        threshold: float = 10.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.interval = interval
        self.threshold = threshold
        self.monotonic = monotonic
        self.last = monotonic()
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    async def _run(self) -> None:
        while True:
            self.last = self.monotonic()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start ticking (counted: each web app serving this agent starts and stops it)."""
        self._users += 1
        if self._task is None:
            self.last = self.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users or self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def late_by(self) -> float:
        """How much later than due the last tick is (0 while on time)."""
        return max(0.0, self.monotonic() - self.last - self.interval)

    def stalled(self) -> str | None:
        if self._task is None or self._task.done():
            return "the event loop's heartbeat is not running"
        late = self.late_by()
        if late > self.threshold:
            return f"the event loop's heartbeat is {late:.1f} s late (limit {self.threshold:g} s)"
        return None


class _Watch:
    def __init__(self, tracker: WatchTracker, key: int, what: str, timeout: float) -> None:
        self._tracker = tracker
        self._key = key
        self.what = what
        self.timeout = timeout
        self.opened_at = tracker.monotonic()

    def close(self) -> None:
        self._tracker.open.pop(self._key, None)


class WatchTracker:
    """The WatchObserver port: which watches are open, and since when."""

    def __init__(self, monotonic: Monotonic = time.monotonic) -> None:
        self.monotonic = monotonic
        self.open: dict[int, _Watch] = {}
        self._keys = itertools.count()

    def opened(self, what: str, timeout: float) -> _Watch:
        key = next(self._keys)
        watch = _Watch(self, key, what, timeout)
        self.open[key] = watch
        return watch

    def silent(self) -> list[str]:
        now = self.monotonic()
        return [
            f"the watch on {w.what} has been silent for {now - w.opened_at:.0f} s "
            f"(timeout {w.timeout:g} s)"
            for w in list(self.open.values())
            if now - w.opened_at > w.timeout
        ]

    async def check(self) -> str | None:
        silent = self.silent()
        return "; ".join(silent) if silent else None


class Health:
    def __init__(self, heartbeat: Heartbeat | None = None, *, check_timeout: float = 5.0) -> None:
        self.heartbeat = heartbeat or Heartbeat()
        self.check_timeout = check_timeout
        self.checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def alive(self) -> str | None:
        """None while the process is alive, else why not."""
        return self.heartbeat.stalled()

    async def ready(self) -> dict[str, str | None]:
        """Each check's failure reason (None: it passed), run together, each under a timeout."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _run(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.check_timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {self.check_timeout:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"


_HEALTH: weakref.WeakKeyDictionary[Agent, Health] = weakref.WeakKeyDictionary()


def install(agent: Agent, health: Health) -> Health:
    """Make ``health`` the one the web app serves for ``agent`` (the runtime wires it)."""
    _HEALTH[agent] = health
    return health


def health_of(agent: Agent) -> Health:
    """The health the web app serves for ``agent``: the one the runtime installed, else a
    default one that checks the ledger (``idds-vis web`` alone, tests)."""
    health = _HEALTH.get(agent)
    if health is None:
        health = install(agent, Health())
        add_agent_checks(health, agent)
    return health


def add_agent_checks(health: Health, agent: Agent) -> None:
    """What any process serving the agent's ledger needs: the ledger answers."""

    async def ledger() -> str | None:
        try:
            await agent.ledger.next_expiry()
        except Exception as exc:
            return f"the ledger is unreachable: {type(exc).__name__}: {exc}"
        return None

    health.add_check("ledger", ledger)


class Connection(Protocol):
    @property
    def connected(self) -> bool: ...


def add_running_checks(health: Health, agent: Agent, broker: Connection | None) -> None:
    """What a running agent needs besides: its membership lease (its workers run only while
    it holds it), and its broker connection when it has an intake."""
    replica = agent.replica
    if replica is not None:

        async def member() -> str | None:
            if replica.member.held:
                return None
            return "this replica does not hold its membership lease: its workers are stopped"

        health.add_check("membership", member)
    if broker is not None:
        connection = broker

        async def connected() -> str | None:
            return None if connection.connected else "not connected to the message broker"

        health.add_check("broker", connected)
