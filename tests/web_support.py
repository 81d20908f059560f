"""What the web app tests share: a stand-in for the PanDA task lookup behind permalinks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp

from idds_vis.agent.service import Agent
from idds_vis.domain.errors import InvalidRequest, NotFound
from idds_vis.domain.models import Instance, VisRequest


@dataclass(frozen=True)
class Task:
    task_id: str
    status: str = "done"
    source: str | None = None  # where its outputs are; None: it has none


class TableStarter:
    """The ``Starter`` the lead wires to PanDA, with a table of tasks in place of PanDA: the
    same checks, the same refusals, the same submission."""

    def __init__(self, agent: Agent, tasks: dict[str, Task]) -> None:
        self.agent = agent
        self.tasks = tasks
        self.asked: list[str] = []

    async def start(
        self,
        task_name: str,
        tool: str,
        ttl: timedelta | None,
        requested_by: str | None,
        *,
        owner: str | None = None,
    ) -> Instance:
        self.asked.append(task_name)
        task = self.tasks.get(task_name)
        if task is None:
            raise NotFound(f"PanDA has no task named {task_name!r}")
        if task.status not in ("done", "finished"):
            raise InvalidRequest(
                f"task {task.task_id} is {task.status}: its visualization starts once it has "
                "finished"
            )
        if task.source is None:
            raise InvalidRequest(f"task {task.task_id} has no outputs to visualize")
        request = VisRequest(task.task_id, source=task.source, tool=tool,
                             ttl=ttl or timedelta(hours=24), origin="permalink",
                             requested_by=requested_by, task_name=task_name)  # fmt: skip
        inst, _ = await self.agent.submit(request)
        return inst


async def sse(resp: aiohttp.ClientResponse, kind: str) -> AsyncIterator[tuple[str, Any]]:
    """The ``kind`` events of a Server-Sent Events response: (raw data, decoded)."""
    event, data = None, []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].removeprefix(" "))
        elif not line and data:
            if event == kind:
                text = "\n".join(data)
                yield text, json.loads(text)
            event, data = None, []
