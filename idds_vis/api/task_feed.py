"""Live progress of permalinks: one ledger watch per followed (task name, tool), shared by every
stream following it.

Before, each open page re-read the ledger twice a second for as long as it stayed open; a
thousand pages on one task made a thousand readers. Now the first stream of a task starts a
watch, which reads the ledger when the agent reports a change of that task (its in-process
events) or after the poll interval (changes made by another process reach only the ledger),
and publishes a new snapshot only when the record changed; the streams wait on it. The watch
ends with the task's last stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from idds_vis.agent.service import Agent
from idds_vis.domain.models import Instance, PhaseEvent

log = logging.getLogger(__name__)
Snapshot = tuple[Instance | None, list[PhaseEvent]]


async def current(agent: Agent, task_name: str, tool: str) -> Instance | None:
    """The newest record of that task name and tool (a resubmitted task reuses its name)."""
    for inst in await agent.ledger.find(task_name=task_name):
        if inst.tool == tool:
            return inst
    return None


async def load(agent: Agent, task_name: str, tool: str) -> Snapshot:
    inst = await current(agent, task_name, tool)
    return inst, (await agent.ledger.history(inst.key) if inst else [])


def _seen(inst: Instance | None) -> tuple[object, ...]:
    return (inst.task_id, inst.attempt, inst.phase, inst.updated_at) if inst else ()


@dataclass
class _Watch:
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    snapshot: Snapshot = (None, [])
    version: int = 0
    followers: int = 0
    task: asyncio.Task[None] | None = None


class Follower:
    """One stream's view of a watch: ``next`` hands over each snapshot once."""

    def __init__(self, watch: _Watch) -> None:
        self._watch = watch
        self._seen = 0

    async def next(self, timeout: float) -> Snapshot | None:
        """The snapshot newer than the last one handed over, or None after ``timeout``."""
        watch = self._watch
        async with watch.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await watch.changed.wait_for(lambda: watch.version > self._seen)
            if watch.version <= self._seen:
                return None
            self._seen = watch.version
            return watch.snapshot


class TaskFeed:
    def __init__(self, agent: Agent, poll_interval: float) -> None:
        self.agent = agent
        self.poll_interval = poll_interval
        self.reads = 0  # ledger reads made for streams (operators and tests look at it)
        self._watches: dict[tuple[str, str], _Watch] = {}

    @property
    def watched(self) -> int:
        return len(self._watches)

    @contextlib.asynccontextmanager
    async def follow(self, task_name: str, tool: str) -> AsyncIterator[Follower]:
        key = (task_name, tool)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch()
            watch.task = asyncio.create_task(self._run(key, watch), name=f"feed {key}")
        watch.followers += 1
        try:
            yield Follower(watch)
        finally:
            watch.followers -= 1
            if watch.followers == 0 and self._watches.get(key) is watch:
                del self._watches[key]
                if watch.task is not None:
                    watch.task.cancel()

    async def _run(self, key: tuple[str, str], watch: _Watch) -> None:
        task_name, tool = key
        queue = self.agent.events.subscribe()
        try:
            sent: tuple[object, ...] | None = None
            while True:
                try:
                    self.reads += 1
                    snapshot = await load(self.agent, task_name, tool)
                except Exception:  # the ledger is down: the streams wait, the watch retries
                    log.exception("reading the progress of %r (%s) failed", task_name, tool)
                else:
                    if _seen(snapshot[0]) != sent:
                        async with watch.changed:
                            watch.snapshot, watch.version = snapshot, watch.version + 1
                            watch.changed.notify_all()
                        sent = _seen(snapshot[0])
                await self._changed(queue, task_name, tool)
        finally:
            self.agent.events.unsubscribe(queue)

    async def _changed(self, queue: asyncio.Queue[Instance], task_name: str, tool: str) -> None:
        """Until the agent reports a change of this task's record, or the poll interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval):
                while True:
                    inst = await queue.get()
                    if inst.task_name == task_name and inst.tool == tool:
                        return

    async def close(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


FEED = web.AppKey("task_feed", TaskFeed)
