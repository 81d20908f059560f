"""Abuse: live streams were unbounded. Each permalink stream re-read the ledger twice a second
for as long as it stayed open, and the rate limit counted only its opening: 330 anonymous
streams were all accepted. Now streams are capped per client and in all, the streams of one
task share one ledger watch, and each stream ends after ``stream_lifetime`` (the page's
EventSource reconnects)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from idds_vis.api.auth.middleware import STREAM_CAPS
from idds_vis.api.keys import STREAMS
from idds_vis.api.task_feed import FEED
from tests.security.access_support import LOOPBACK_PROXY, Site, path, via_proxy, web_app


async def _first_state(resp: aiohttp.ClientResponse) -> None:
    """Read the stream up to its first ``state`` event."""
    async with asyncio.timeout(30):  # a hang guard, not a timing assertion
        async for raw in resp.content:
            if raw.startswith(b"event: state") or raw.startswith(b"event:state"):
                return
    raise AssertionError("the stream ended before its first state")


@contextlib.asynccontextmanager
async def _streams(site: Site, wanted: list[tuple[int, str]]
                   ) -> AsyncIterator[list[aiohttp.ClientResponse]]:  # fmt: skip
    """Open streams of (task, client); yields the responses (open ones stay open)."""
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for i, client in wanted:
            resp = await stack.enter_async_context(
                site.http.get(path(i) + "/events", headers=via_proxy(client)))
            opened.append(resp)
        yield opened


async def test_streams_are_capped_per_client_and_in_all(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"trusted_proxies": LOOPBACK_PROXY, "stream_limit_per_client": 2,
                                "stream_limit_total": 4}  # fmt: skip
    async with web_app(tmp_path, **settings) as site:
        a, b, c = "203.0.113.7", "203.0.113.8", "203.0.113.9"
        async with _streams(site, [(0, a), (1, a), (2, a)]) as (s1, s2, s3):
            assert [s1.status, s2.status, s3.status] == [200, 200, 429]
            assert s3.headers["Retry-After"] and "live pages already" in await s3.text()
            async with _streams(site, [(0, b), (0, b), (1, c)]) as (s4, s5, s6):
                assert [s4.status, s5.status, s6.status] == [200, 200, 429]  # 4 in all
        # Closed streams give their slots back, once the server has seen them go.
        handlers = set(site.app[STREAMS])
        async with asyncio.timeout(30):  # a hang guard
            await asyncio.wait(handlers)
        assert site.app[STREAM_CAPS].open == 0
        async with _streams(site, [(0, a), (1, a)]) as again:
            assert [s.status for s in again] == [200, 200]
        denied = await site.denied()
        assert (denied["streams_per_client"], denied["streams_total"]) == (1, 1)


async def test_the_streams_of_one_task_share_one_ledger_read(tmp_path: Path) -> None:
    """With the poll interval out of the way, 20 streams on one task cost one ledger read, not
    one each (counted on the ledger itself)."""
    async with web_app(tmp_path, poll_interval=3600.0, stream_limit_per_client=50) as site:
        reads: list[str] = []
        find = site.agent.ledger.find

        async def counting(*args: Any, **kwargs: Any) -> Any:
            reads.append(str(kwargs.get("task_name")))
            return await find(*args, **kwargs)

        site.agent.ledger.find = counting  # type: ignore[method-assign]
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(20):
                resp = await stack.enter_async_context(site.http.get(path(0) + "/events"))
                assert resp.status == 200
                await _first_state(resp)
            assert reads == ["user.jdoe.t0"]
            assert site.app[FEED].watched == 1


async def test_a_stream_ends_by_itself_and_the_page_reconnects(tmp_path: Path) -> None:
    async with (
        web_app(tmp_path, stream_lifetime=timedelta(milliseconds=200)) as site,
        site.http.get(path(0) + "/events") as resp,
    ):
        await _first_state(resp)
        async with asyncio.timeout(30):  # a hang guard: before, a stream never ended
            await resp.content.read()
        assert resp.content.at_eof()
    script = (Path(__file__).parents[2] / "idds_vis/api/static/permalink.js").read_text()
    # A refused reconnection (429) closes an EventSource for good: the page opens a new one.
    assert "EventSource.CLOSED" in script and "setTimeout(listen" in script
