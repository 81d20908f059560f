"""Fan-out of phase changes to in-process watchers (the demo's display, later SSE)."""

from __future__ import annotations

import asyncio

from idds_vis.domain.models import Instance


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Instance]] = set()

    def subscribe(self) -> asyncio.Queue[Instance]:
        queue: asyncio.Queue[Instance] = asyncio.Queue()
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Instance]) -> None:
        self._queues.discard(queue)

    def publish(self, instance: Instance) -> None:
        for queue in self._queues:
            queue.put_nowait(instance)
