"""Issue 17: the permalink's live streams share one owner lookup per record change. Each stream
checks who may see the UI's URL at every change; when PanDA does not know the task's owner
(nothing is remembered), every stream asked PanDA again: N open pages, N PanDA calls per
change. Now the task's shared watch asks once per snapshot. A counting stand-in for PanDA."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from idds_vis.api import make_app, serving
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.catalog_support import settings_for
from tests.fakes import FakeDeployer, make_agent
from tests.oidc_issuer import running_issuer
from tests.web_support import TableStarter, sse

STREAMS = 6
EVENTS = "/t/7000/mlflow/events"


class OwnerUnknown:
    """PanDA's task directory that knows task 7000 but not its owner; counts the asks."""

    def __init__(self) -> None:
        self.asked = 0

    async def task(self, task_id: str) -> CatalogTask:
        self.asked += 1
        return CatalogTask(task_id, "user.nobody.task/", None, "file:///outputs/7000")

    async def by_name(self, task_name: str, owner: str | None = None) -> CatalogTask:
        return await self.task("7000")


async def states(resp: aiohttp.ClientResponse, into: asyncio.Queue[Any]) -> None:
    async for _, state in sse(resp, "state"):
        await into.put(state)


async def test_one_owner_lookup_per_change_for_all_streams(tmp_path: Path) -> None:
    panda = OwnerUnknown()
    async with running_issuer() as issuer:
        settings = settings_for(tmp_path, issuer, stream_limit_per_client=STREAMS + 2)
        ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
        agent = make_agent(ledger, FakeDeployer(tmp_path / "uis"))
        await agent.start()
        app = make_app(agent, settings, TableStarter(agent, {}), poll_interval=0.05,
                       directory=panda)  # fmt: skip
        try:
            inst, _ = await agent.submit(VisRequest("7000", source="file:///outputs/7000"))
            async with serving(app, "127.0.0.1", 0) as url, aiohttp.ClientSession(url) as http, \
                    contextlib.AsyncExitStack() as stack:  # fmt: skip
                inst = await _ready(agent)
                me = {"Authorization": "Bearer " + issuer.token(sub="jdoe", name="Jane Doe")}
                queues: list[asyncio.Queue[Any]] = []
                readers = []
                for _ in range(STREAMS):
                    resp = await stack.enter_async_context(http.get(EVENTS, headers=me))
                    assert resp.status == 200
                    queue: asyncio.Queue[Any] = asyncio.Queue()
                    queues.append(queue)
                    readers.append(asyncio.create_task(states(resp, queue)))
                try:
                    async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                        for queue in queues:
                            while (await queue.get())["phase"] != "ready":
                                pass
                        before = panda.asked
                        # One change of the record: every stream sends it, after one lookup.
                        await agent.extend(inst.key, timedelta(minutes=30))
                        for queue in queues:
                            await queue.get()
                finally:
                    for reader in readers:
                        reader.cancel()
                assert 1 <= before <= 2  # the ready snapshot (and at most the one before it)
                assert panda.asked - before == 1, panda.asked
        finally:
            await agent.stop()
            await ledger.close()


async def _ready(agent: Any) -> Any:
    queue = agent.events.subscribe()
    try:
        async with asyncio.timeout(30):  # a hang guard
            while True:
                inst = await agent.ledger.get(InstanceKey("7000"))
                if inst is not None and inst.phase is Phase.READY:
                    return inst
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await queue.get()
    finally:
        agent.events.unsubscribe(queue)
