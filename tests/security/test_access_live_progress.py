"""Abuse (issue 17): what the permalink's pages and the live streams reveal, and what the
catalog's own stream costs.

- The permalink with ``?stay`` and its Server-Sent Events showed a live UI's URL, which carries
  the instance's unguessable path token, to any signed-in user (or to anyone without sign-in).
  Now only those ``may_view`` lets see the UI get it; others see the progress and whom to ask.
- The catalog's stream re-read the ledger for each open page at every change and poll and
  never ended. Now every stream of one person shares one ledger watch, each ends after
  ``stream_lifetime`` (catalog.js reconnects), and the stream caps count them.

Real web app, real local OIDC issuer, real SQLite ledger; stand-in stager and deployer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from idds_vis.domain.models import Instance
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import Issuer, running_issuer
from tests.web_support import sse

VIS = "/api/v1/visualizations"
PERMALINK = "/t/user.jdoe.mnist%2F/mlflow"  # Jane's task 4242


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def first(resp: aiohttp.ClientResponse, kind: str) -> tuple[str, Any]:
    assert resp.status == 200, await resp.text()
    async with asyncio.timeout(30):  # a hang guard, not a timing assertion
        async for found in sse(resp, kind):
            return found
    raise AssertionError(f"the stream ended before its first {kind!r} event")


async def janes_ui(web: Site) -> Instance:
    async with web.http.post(VIS, json={"task_id": "4242", "ttl": "2h"},
                             headers=web.as_user(JANE)) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
    inst = await web.until("4242", {Phase.READY})
    assert inst.path_token and inst.url and inst.path_token in inst.url
    return inst


async def page(web: Site, headers: dict[str, str], query: str = "?stay=1") -> tuple[int, str]:
    async with web.http.get(PERMALINK + query, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def stream_state(web: Site, headers: dict[str, str]) -> tuple[str, Any]:
    async with web.http.get(PERMALINK + "/events", headers=headers) as resp:
        return await first(resp, "state")


async def test_another_users_stay_page_json_and_stream_hold_no_path_token(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer) as web:
        inst = await janes_ui(web)
        assert inst.url is not None and inst.path_token is not None
        token = inst.path_token
        jane, john = web.as_user(JANE), web.as_user(JOHN)

        # The owner: the page, the stream and the JSON give her the URL.
        status, html = await page(web, jane)
        assert status == 200 and inst.url in html
        _, state = await stream_state(web, jane)
        assert state["url"] == inst.url and inst.url in state["html"]

        # Another signed-in user: the progress, without the path token, and whom to ask.
        status, html = await page(web, john)
        assert status == 200 and token not in html
        assert "The MLflow UI is live" in html and "Ask the task&#39;s owner" in html
        status, html = await page(web, john, query="")  # no ?stay: refused, same page
        assert status == 403 and token not in html and "Ask the task&#39;s owner" in html
        raw, state = await stream_state(web, john)
        assert state["phase"] == "ready" and state["url"] is None and token not in raw
        assert "not shared with you" in state["html"]
        for path in ("/api/v1/tasks/4242", "/api/v1/tasks/by-name/user.jdoe.mnist/"):
            async with web.http.get(path, headers=john) as resp:
                text = await resp.text()
            assert resp.status == 200 and token not in text
            assert json.loads(text)["instances"][0]["url"] is None

        # Shared with a group of John's: now the stream gives him the URL. A stream that joins
        # the task's shared watch may first get its last snapshot (a closed page's stream lets
        # go of it at its next wake); the change follows within the poll interval.
        now = web.agent.clock.now()
        await web.agent.ledger.set_visibility(inst.key, "groups:atlas/ml", now)  # type: ignore[attr-defined]
        headers = web.as_user(JOHN, groups=["atlas", "atlas/ml"])
        async with web.http.get(PERMALINK + "/events", headers=headers) as resp:
            assert resp.status == 200
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                async for _, state in sse(resp, "state"):
                    if state["url"] is not None:
                        break
        assert state["url"] == inst.url


async def test_without_sign_in_the_stay_page_and_stream_hold_no_path_token(
    tmp_path: Path, issuer: Issuer
) -> None:
    """Reads open to visitors (``auth_required_for_reads: false``): still no URL for them."""
    async with site(tmp_path, issuer, auth_required_for_reads=False) as web:
        inst = await janes_ui(web)
        assert inst.path_token is not None
        status, html = await page(web, {})
        assert status == 200 and inst.path_token not in html and "Sign in to open it" in html
        status, _ = await page(web, {}, query="")
        assert status == 303  # sent to sign in, as before
        raw, state = await stream_state(web, {})
        assert state["url"] is None and inst.path_token not in raw


@contextlib.asynccontextmanager
async def catalog_streams(web: Site, headers: dict[str, str], count: int
                          ) -> AsyncIterator[list[aiohttp.ClientResponse]]:  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(web.http.get(VIS + "/events", headers=headers))
                  for _ in range(count)]  # fmt: skip
        yield opened


async def test_the_catalog_streams_of_one_person_share_one_ledger_read(
    tmp_path: Path, issuer: Issuer
) -> None:
    """With the poll interval out of the way, 10 catalog streams of one person cost one ledger
    read, and each change of the agent one more, not one per stream (counted on the ledger)."""
    async with site(tmp_path, issuer, poll_interval=3600.0, stream_limit_per_client=20) as web:
        reads: list[str] = []
        owned_by = web.agent.ledger.owned_by  # type: ignore[attr-defined]

        async def counting(user: str) -> Any:
            reads.append(user)
            return await owned_by(user)

        web.agent.ledger.owned_by = counting  # type: ignore[attr-defined]
        changes = web.agent.events.subscribe()
        jane = web.as_user(JANE)
        async with catalog_streams(web, jane, 10) as streams:
            for resp in streams:
                _, mine = await first(resp, "mine")
                assert mine["visualizations"] == []
            assert reads == [JANE]
            # A change: Jane starts a UI; every stream sees it live.
            async with web.http.post(VIS, json={"task_id": "4242"}, headers=jane) as resp:
                assert resp.status == 201
            for resp in streams:
                async with asyncio.timeout(30):  # a hang guard
                    async for _, mine in sse(resp, "mine"):
                        if [v["phase"] for v in mine["visualizations"]] == ["ready"]:
                            break
            # One read per change the agent reported (and the first), however many streams:
            # before, each of the 10 streams read at each of them.
            assert 1 < len(reads) <= 1 + changes.qsize()


async def test_catalog_streams_are_capped_and_end_by_themselves(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path / "capped", issuer, stream_limit_per_client=2) as web:
        jane = web.as_user(JANE)
        async with catalog_streams(web, jane, 3) as (one, two, three):
            assert [one.status, two.status, three.status] == [200, 200, 429]
            assert "live pages already" in await three.text()
    async with (
        site(tmp_path / "short", issuer, stream_lifetime=timedelta(milliseconds=300)) as web,
        catalog_streams(web, web.as_user(JANE), 1) as (one,),
    ):
        assert one.status == 200
        async with asyncio.timeout(30):  # a hang guard: before, the stream never ended
            await one.content.read()
        assert one.content.at_eof()
    script = (Path(__file__).parents[2] / "idds_vis/api/static/catalog.js").read_text()
    # A refused reconnection (429) closes an EventSource for good: the page opens a new one.
    assert "EventSource.CLOSED" in script and "setTimeout(listen" in script
