"""A person's clicks in a real browser: the permalink starts the task's UI and lands on it,
an expired one is relaunched, and the monitor snippet renders on another site's page.

Real parts: headless chromium, the web app and the agent on loopback, real MLflow UI
processes through the local deployer, a real SQLite ledger. Only PanDA's task lookup is a
table (``TableStarter``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from tests.demo_data import EXPERIMENT
from tests.web_support import TableStarter, Task

pytestmark = [pytest.mark.browser, pytest.mark.mlflow]
TRAIN = "user.jdoe.mnist-train/"
TRAIN_PATH = "/t/user.jdoe.mnist-train%2F/mlflow"
UI_URL = re.compile(r"^http://127\.0\.0\.1:\d+/vis/mlflow-[0-9a-f]{32}/")
# Hang guards (milliseconds) for Playwright's waiting assertions, not timing assertions: a UI
# takes about 7 s to start on an idle 2-core machine, several times that on a loaded one.
PROGRESS_MS = 120_000
EARLIER = ("requested", "resolving", "staging", "deploying")


@dataclass
class Live:
    agent: Agent
    settings: Settings
    starter: TableStarter
    started: list[str] = field(default_factory=list)


@pytest_asyncio.fixture
async def live(tmp_path: Path, demo_archive: Path) -> AsyncIterator[Live]:
    """The agent with the real local deployer (not started: a test may first write history)."""
    settings = Settings(state_dir=tmp_path / "state", workers=2)
    agent = build_agent(settings)
    await agent.ledger.open()
    starter = TableStarter(agent, {TRAIN: Task("5151", source=str(demo_archive))})
    try:
        yield Live(agent, settings, starter)
    finally:
        await agent.stop()
        for inst in await agent.ledger.list():
            await agent.deployer.delete(inst)
        await agent.ledger.close()


def step(page: Page, phase: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#live li.step[data-phase="{phase}"]')


async def follow_to_the_ui(page: Page, artifacts: Path, shot: str) -> None:
    """On the permalink page: see the earlier phases done while the UI starts, then land on
    the MLflow UI and find the task's run in it."""
    await expect(step(page, "starting")).to_have_attribute("data-state", "current",
                                                           timeout=PROGRESS_MS)  # fmt: skip
    for phase in EARLIER:
        await expect(step(page, phase)).to_have_attribute("data-state", "done")
    await expect(step(page, "ready")).to_have_attribute("data-state", "pending")
    await expect(page.locator("#live h1")).to_have_text("Waiting for the UI to answer")
    await page.screenshot(path=str(artifacts / shot), full_page=True)

    await page.wait_for_url(UI_URL, timeout=PROGRESS_MS)
    # The UI opens on the staged experiment's runs (issue 19: not MLflow's GenAI home), where
    # the task's run is listed.
    await expect(page.get_by_role("link", name="demo-training")).to_be_visible(timeout=PROGRESS_MS)
    await expect(page.get_by_test_id("experiment-link")).to_have_text(EXPERIMENT)


async def test_the_permalink_starts_the_ui_shows_progress_and_lands_on_it(
    live: Live, browser: Browser, artifacts: Path
) -> None:
    await live.agent.start()
    app = make_app(live.agent, live.settings, live.starter)
    async with serving(app, "127.0.0.1", 0) as base:
        page = await browser.new_page()
        await page.goto(base + TRAIN_PATH + "?ttl=1h")  # the page starts it by itself
        await follow_to_the_ui(page, artifacts, "permalink-starting.png")
        (inst,) = await live.agent.ledger.find(task_name=TRAIN)
        assert inst.phase is Phase.READY and inst.ttl == timedelta(hours=1)
        assert live.starter.asked == [TRAIN]

        # Clicking the permalink again goes straight to the live UI.
        again = await browser.new_page()
        await again.goto(base + TRAIN_PATH)
        assert again.url.split("#")[0] == inst.url  # then the UI opens on the task's runs


async def test_an_expired_ui_is_relaunched_from_its_permalink(
    live: Live, browser: Browser, artifacts: Path
) -> None:
    # Its history, as an agent left it yesterday: live for an hour, then removed.
    ledger, t = live.agent.ledger, live.agent.clock.now() - timedelta(days=1)
    request = VisRequest("5151", source=live.starter.tasks[TRAIN].source, task_name=TRAIN,
                         ttl=timedelta(hours=1), origin="permalink")  # fmt: skip
    inst, _ = await ledger.submit(request, t)
    await ledger.claim(t, "yesterday")
    for phase in (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
        await ledger.transition(inst.key, phase, t)
    await ledger.transition(inst.key, Phase.READY, t, url="http://127.0.0.1:9/vis/gone/",
                            expires_at=t + timedelta(hours=1))  # fmt: skip
    await ledger.transition(inst.key, Phase.EXPIRING, t + timedelta(hours=1))
    await ledger.transition(inst.key, Phase.EXPIRED, t + timedelta(hours=1))

    await live.agent.start()
    app = make_app(live.agent, live.settings, live.starter)
    async with serving(app, "127.0.0.1", 0) as base:
        page = await browser.new_page()
        await page.goto(base + TRAIN_PATH)
        await expect(page.locator("#live h1")).to_have_text("This visualization has ended")
        await expect(page.locator("#detail")).to_contain_text("It was live until")
        await page.screenshot(path=str(artifacts / "permalink-expired.png"), full_page=True)
        await page.locator("#relaunch").click()
        await follow_to_the_ui(page, artifacts, "permalink-relaunched.png")
    relaunched = await ledger.get(inst.key)
    assert relaunched is not None and relaunched.attempt == 2
    assert relaunched.phase is Phase.READY and relaunched.url and UI_URL.match(relaunched.url)
    assert live.starter.asked == []  # a relaunch needs no new lookup


async def test_the_snippet_on_another_site_and_a_refused_permalink(
    live: Live, browser: Browser, artifacts: Path
) -> None:
    ledger, t = live.agent.ledger, live.agent.clock.now()
    ready, _ = await ledger.submit(VisRequest("5151", source="s", task_name=TRAIN), t)
    await ledger.claim(t, "test")
    for phase in (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
        await ledger.transition(ready.key, phase, t)
    ui = "http://127.0.0.1:9/vis/mlflow-5151-00000000/"
    await ledger.transition(ready.key, Phase.READY, t, url=ui, expires_at=t + timedelta(hours=24))
    failed, _ = await ledger.submit(VisRequest("6161", source="s", task_name="user.x.f"), t)
    await ledger.transition(failed.key, Phase.FAILED, t, reason="no MLflow data in s")

    app = make_app(live.agent, live.settings, live.starter)  # no agent running: nothing moves
    async with serving(app, "127.0.0.1", 0) as base:
        # A task page on another origin (the monitor), with the one script tag per task.
        tags = "".join(f'<div id="t{task}"><script src="{base}/embed.js" data-task-id="{task}" '
                       'async></script></div>' for task in ("5151", "6161", "999"))  # fmt: skip
        monitor = web.Application()

        async def task_page(_: web.Request) -> web.Response:
            body = f"<!doctype html><html><body><h1>Task page</h1>{tags}</body></html>"
            return web.Response(text=body, content_type="text/html")

        monitor.router.add_get("/task/", task_page)
        async with serving(monitor, "127.0.0.1", 0) as monitor_url:
            page = await browser.new_page()
            await page.goto(monitor_url + "/task/")
            live_row = page.locator('#t5151 .row[data-phase="ready"]')
            await expect(live_row.get_by_role("link", name="Open the UI")).to_have_attribute(
                "href", ui
            )
            await expect(live_row).to_contain_text("live until")
            failed_row = page.locator('#t6161 .row[data-phase="failed"]')
            await expect(failed_row).to_contain_text("no MLflow data in s")
            await expect(failed_row.get_by_role("link", name="Relaunch")).to_have_attribute(
                "href", f"{base}/t/user.x.f/mlflow"
            )
            await expect(page.locator("#t999")).to_contain_text(
                "no visualization has been asked for task 999"
            )
            await page.screenshot(path=str(artifacts / "monitor-snippet.png"), full_page=True)

        # A permalink of a task PanDA does not know: the reason, once, and no record.
        page = await browser.new_page()
        await page.goto(base + "/t/user.nobody.nothing/mlflow")
        await expect(page.locator("#detail")).to_have_text(
            "PanDA has no task named 'user.nobody.nothing'"
        )
        assert page.url == base + "/t/user.nobody.nothing/mlflow"  # a reload asks again
        await expect(page.locator("#start")).to_have_text("Try again")
        assert live.starter.asked == ["user.nobody.nothing"]
        assert len(await ledger.list()) == 2
