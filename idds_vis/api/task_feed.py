"""Live progress without a ledger reader per open page: one watch per followed subject, shared
by every stream following it.

Before, each open page re-read the ledger twice a second for as long as it stayed open; a
thousand pages on one task made a thousand readers. Now the first stream of a subject starts a
watch, which reads the ledger when the agent reports a change (its in-process events) or after
the poll interval (changes made by another process reach only the ledger), and publishes a new
snapshot only when what it read changed; the streams wait on it. The watch ends with the
subject's last stream. Two kinds of subject:

- a permalink's (task name, tool): its newest record and that record's history
  (``follow``); a name of digits only also finds the record of that task id (issue 19);
- a person's catalog list (``follow_mine``, keyed by the user name): their records and their
  queued requests. Every stream of one person, whatever page or tab, shares one watch.

What each stream derives from a snapshot for its caller is asked of the watch once per
snapshot (``Follower.once``): the access check's task owner, which may mean asking PanDA, is
looked up once per change for all of a task's streams, not once per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web

from idds_vis.agent.service import Agent
from idds_vis.api.starter import task_id_of
from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.quotas import Waiting

log = logging.getLogger(__name__)
Snapshot = tuple[Instance | None, list[PhaseEvent]]
Mine = tuple[list[Instance], list[Waiting]]
T = TypeVar("T")
R = TypeVar("R")


async def current(agent: Agent, task_name: str, tool: str) -> Instance | None:
    """The newest record of that task name and tool (a resubmitted task reuses its name).

    A name of digits only that no record carries is also looked up as a task id: a record made
    by the CLI or the catalog may have no name, and people write ``/t/4711/mlflow`` (issue 19).
    """
    for inst in await agent.ledger.find(task_name=task_name):
        if inst.tool == tool:
            return inst
    task_id = task_id_of(task_name)
    if task_id is not None:
        for inst in await agent.ledger.find(task_id=task_id):
            if inst.tool == tool:
                return inst
    return None


async def load(agent: Agent, task_name: str, tool: str) -> Snapshot:
    inst = await current(agent, task_name, tool)
    return inst, (await agent.ledger.history(inst.key) if inst else [])


def _seen(inst: Instance | None) -> tuple[object, ...]:
    """What makes a new snapshot; the visibility too: who gets the UI's URL follows it."""
    if inst is None:
        return ()
    return (inst.task_id, inst.attempt, inst.phase, inst.updated_at, inst.visibility)


def _seen_mine(mine: Mine) -> Hashable:
    instances, queued = mine
    return (
        tuple((i.task_id, i.tool, i.attempt, i.phase, i.updated_at, i.expires_at, i.visibility)
              for i in instances),
        tuple(json.dumps(w.as_json(), sort_keys=True, default=str) for w in queued),
    )  # fmt: skip


@dataclass(frozen=True)
class Source(Generic[T]):
    """What a watch reads, how it tells a change, and which agent events wake it."""

    read: Callable[[], Awaitable[T]]
    seen: Callable[[T], Hashable]
    wakes: Callable[[Instance], bool]
    label: str


@dataclass
class _Watch(Generic[T]):
    source: Source[T]
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    snapshot: T | None = None
    version: int = 0
    followers: int = 0
    task: asyncio.Task[None] | None = None
    # What the streams derive from a snapshot, asked once for all of them: (version, key) ->
    # the asking task. Entries of older snapshots go when a new one is published.
    memo: dict[tuple[int, Hashable], asyncio.Task[Any]] = field(default_factory=dict)

    def publish(self, snapshot: T) -> None:
        self.snapshot, self.version = snapshot, self.version + 1
        for slot in [slot for slot in self.memo if slot[0] < self.version]:
            del self.memo[slot]

    def forget(self) -> None:
        for task in self.memo.values():
            task.cancel()
        self.memo.clear()


class Follower(Generic[T]):
    """One stream's view of a watch: ``next`` hands over each snapshot once."""

    def __init__(self, watch: _Watch[T]) -> None:
        self._watch = watch
        self._seen = 0

    async def next(self, timeout: float) -> T | None:
        """The snapshot newer than the last one handed over, or None after ``timeout``."""
        watch = self._watch
        async with watch.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await watch.changed.wait_for(lambda: watch.version > self._seen)
            if watch.version <= self._seen or watch.snapshot is None:
                return None
            self._seen = watch.version
            return watch.snapshot

    async def once(self, key: Hashable, ask: Callable[[], Awaitable[R]]) -> R:
        """``ask()``'s answer for the snapshot last handed over, asked once for every stream
        of the watch (issue 17: a task's owner, which PanDA may be asked for, once per change
        and not once per stream). The first stream asks; the others wait for its answer. A
        failure is not kept: the next stream asks again."""
        watch = self._watch
        slot = (self._seen, key)
        task = watch.memo.get(slot)
        if task is None:
            task = asyncio.ensure_future(ask())
            if slot[0] == watch.version:  # not kept for a snapshot already replaced
                watch.memo[slot] = task
        try:
            result: R = await asyncio.shield(task)
        except Exception:
            if watch.memo.get(slot) is task:
                del watch.memo[slot]
            raise
        return result


class TaskFeed:
    def __init__(self, agent: Agent, poll_interval: float) -> None:
        self.agent = agent
        self.poll_interval = poll_interval
        self.reads = 0  # ledger reads made for streams (operators and tests look at it)
        self._watches: dict[Hashable, _Watch[object]] = {}

    @property
    def watched(self) -> int:
        return len(self._watches)

    def follow(self, task_name: str, tool: str
               ) -> contextlib.AbstractAsyncContextManager[Follower[Snapshot]]:  # fmt: skip
        """Follow a permalink's record (by task name, or by task id when the name is digits)."""

        async def read() -> Snapshot:
            return await load(self.agent, task_name, tool)

        def wakes(inst: Instance) -> bool:
            return inst.tool == tool and task_name in (inst.task_name, inst.task_id)

        seen: Callable[[Snapshot], Hashable] = lambda snapshot: _seen(snapshot[0])  # noqa: E731
        return self._follow(("task", task_name, tool),
                            Source(read, seen, wakes, f"{task_name!r} ({tool})"))  # fmt: skip

    def follow_mine(self, user: str, read: Callable[[], Awaitable[Mine]]
                    ) -> contextlib.AbstractAsyncContextManager[Follower[Mine]]:  # fmt: skip
        """Follow one person's catalog list; ``read`` reads it (the first stream's is kept).

        Any change may move their list (a record of a task they own, the queue's positions), so
        every event of the agent wakes the watch: one read per change per person, not per page.
        """
        return self._follow(("mine", user),
                            Source(read, _seen_mine, lambda _: True, f"{user}'s list"))  # fmt: skip

    @contextlib.asynccontextmanager
    async def _follow(self, key: Hashable, source: Source[T]) -> AsyncIterator[Follower[T]]:
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(source)  # type: ignore[arg-type]
            watch.task = asyncio.create_task(self._run(watch), name=f"feed {key}")
        watch.followers += 1
        try:
            yield Follower(watch)  # type: ignore[arg-type]
        finally:
            watch.followers -= 1
            if watch.followers == 0 and self._watches.get(key) is watch:
                del self._watches[key]
                if watch.task is not None:
                    watch.task.cancel()
                watch.forget()

    async def _run(self, watch: _Watch[T]) -> None:
        source = watch.source
        queue = self.agent.events.subscribe()
        try:
            sent: Hashable = object()  # nothing sent yet: the first read is always published
            while True:
                try:
                    self.reads += 1
                    snapshot = await source.read()
                except Exception:  # the ledger is down: the streams wait, the watch retries
                    log.exception("reading the progress of %s failed", source.label)
                else:
                    if source.seen(snapshot) != sent:
                        async with watch.changed:
                            watch.publish(snapshot)
                            watch.changed.notify_all()
                        sent = source.seen(snapshot)
                await self._changed(queue, source.wakes)
        finally:
            self.agent.events.unsubscribe(queue)

    async def _changed(self, queue: asyncio.Queue[Instance],
                       wakes: Callable[[Instance], bool]) -> None:  # fmt: skip
        """Until the agent reports a change this watch cares about, or the poll interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval):
                while True:
                    if wakes(await queue.get()):
                        return

    async def close(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


FEED = web.AppKey("task_feed", TaskFeed)
