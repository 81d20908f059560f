"""Issue 19, the physicist's walls in a real browser (headless chromium; screenshots under
``IDDS_VIS_TEST_ARTIFACTS``, default /tmp/idds-vis-browser, which CI keeps as an artefact):

- the permalink lands in the MLflow UI on the task's runs, in the model-training mode, without
  the GenAI home, the telemetry notice, the assistant or the "Detect Issues" tip (real MLflow);
- the pages say each step's state in words, the headline tells the current step, times carry
  their zone, reasons carry no server path, task names wrap without breaking words on a phone,
  there is an icon, ``/`` is the catalog (no MLflow: records written to the ledger);
- the development sign-in: a banner on every page, any name, loopback only; a started UI's
  "Starting…" becomes what came of it, and an ended UI offers a relaunch (the stand-in UI).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from idds_vis.api import make_app, serving
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from tests.browser.test_permalink_browser import (  # noqa: F401 (the fixture)
    PROGRESS_MS,
    TRAIN,
    TRAIN_PATH,
    UI_URL,
    Live,
    live,
)
from tests.catalog_support import TableDirectory
from tests.web_support import TableStarter

LANDING = re.compile(r"#/experiments/\d+/runs\?workflowType=machine_learning")
UTC_TIME = re.compile(r"live until \d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.mark.mlflow
async def test_the_permalink_lands_on_the_tasks_runs_in_the_model_training_mode(
    live: Live,  # noqa: F811 (the fixture of test_permalink_browser)
    browser: Browser,
    artifacts: Path,
) -> None:
    await live.agent.start()
    app = make_app(live.agent, live.settings, live.starter)
    async with serving(app, "127.0.0.1", 0) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(base + TRAIN_PATH + "?ttl=1h")
        # While it starts: every step says its state in words, and the headline is the
        # current step (it used to name the step before).
        current = page.locator('#live li.step[data-state="current"]')
        await expect(current.locator(".step-state")).to_have_text("in progress",
                                                                 timeout=PROGRESS_MS)  # fmt: skip
        await expect(
            page.locator('#live li.step[data-phase="requested"] .step-state')
        ).to_have_text("done")
        await expect(page.locator('#live li.step[data-phase="ready"] .step-state')).to_have_text(
            "not yet"
        )
        await page.screenshot(path=str(artifacts / "physicist-progress.png"), full_page=True)

        answers: list[tuple[int, str]] = []
        page.on("response", lambda resp: answers.append((resp.status, resp.url)))
        await page.wait_for_url(UI_URL, timeout=PROGRESS_MS)
        await expect(page.get_by_role("link", name="demo-training")).to_be_visible(
            timeout=PROGRESS_MS
        )
        assert LANDING.search(page.url), page.url
        await expect(page.get_by_text("1 matching run")).to_be_visible()
        # None of the GenAI home, its pop-ups or the assistant.
        for gone in ("Start Demo", "Information about UI telemetry", "Detect Issues",
                     "AI Gateway", "Prompts"):  # fmt: skip
            await expect(page.get_by_text(gone, exact=True)).to_have_count(0)
        for part in await page.locator('[data-assistant-ui="true"]').all():
            await expect(part).to_be_hidden()
        await expect(page.get_by_role("button", name="MLflow Assistant")).to_have_count(0)
        # The UI's listing of gateway endpoints is answered (no "PERMISSION_DENIED" toast).
        await page.wait_for_load_state("networkidle")
        gateway = [status for status, url in answers if "/gateway-proxy" in url]
        assert gateway and set(gateway) == {200}, answers
        await expect(page.get_by_text("PERMISSION_DENIED")).to_have_count(0)
        await page.screenshot(path=str(artifacts / "physicist-mlflow-landing.png"))


async def test_the_pages_a_physicist_meets(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    agent = build_agent(settings)
    await agent.ledger.open()
    ledger, t = agent.ledger, agent.clock.now()
    try:
        name = "user.jdoe.a-rather-long-task-name-of-a-hyperparameter-scan.v2/"
        ready, _ = await ledger.submit(VisRequest("5151", source="s", task_name=name), t)
        await ledger.claim(t, "test")
        for phase in (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
            await ledger.transition(ready.key, phase, t)
        await ledger.transition(ready.key, Phase.READY, t, url="http://127.0.0.1:9/vis/x/",
                                expires_at=t + timedelta(hours=24))  # fmt: skip
        failed, _ = await ledger.submit(VisRequest("6161", source="s", task_name="user.x.f"), t)
        await ledger.transition(failed.key, Phase.FAILED, t,
                                reason="staging failed: /srv/idds-vis/state/staging/6161/mlflow.db"
                                " is not a database")  # fmt: skip
        app = make_app(agent, settings, TableStarter(agent, {}))
        async with serving(app, "127.0.0.1", 0) as base:
            page = await browser.new_page(viewport={"width": 360, "height": 740})  # a phone
            # "/" is the catalog, not a bare 404; the pages name an icon, and it is there.
            await page.goto(base + "/")
            assert page.url == base + "/catalog"
            icon = await page.locator('link[rel="icon"]').get_attribute("href")
            async with aiohttp.ClientSession() as http:
                for where in (base + str(icon), base + "/favicon.ico"):
                    async with http.get(where) as resp:
                        assert resp.status == 200 and resp.content_type == "image/svg+xml"

            # A failed UI: the reason without the server's path; steps in words.
            await page.goto(base + "/t/user.x.f/mlflow?stay")
            await expect(page.locator("#detail")).to_have_text(
                "staging failed: …/mlflow.db is not a database"
            )
            await expect(
                page.locator('#live li.step[data-state="failed"] .step-state')
            ).to_have_text("failed")
            await page.screenshot(
                path=str(artifacts / "physicist-failed-phone.png"), full_page=True
            )

            # A long task name wraps between words on a phone, never inside "hyperparameter".
            await page.goto(base + "/t/" + name.replace("/", "%2F") + "/mlflow?stay")
            task = page.locator("#live .task")
            await expect(task).to_contain_text("hyperparameter")
            style = await task.evaluate("e => [getComputedStyle(e).wordBreak, "
                                        "getComputedStyle(e).overflowWrap]")  # fmt: skip
            assert style == ["normal", "anywhere"]
            await page.screenshot(path=str(artifacts / "physicist-live-phone.png"), full_page=True)

            # The snippet on a task page: the expiry with its zone, in one order for everyone.
            monitor = web.Application()
            tag = f'<script src="{base}/embed.js" data-task-id="5151" async></script>'

            async def task_page(_: web.Request) -> web.Response:
                return web.Response(text=f"<!doctype html><body>{tag}</body>",
                                    content_type="text/html")  # fmt: skip

            monitor.router.add_get("/task/", task_page)
            async with serving(monitor, "127.0.0.1", 0) as monitor_url:
                other = await browser.new_page()
                await other.emulate_media()
                await other.goto(monitor_url + "/task/")
                row = other.locator('.row[data-phase="ready"]')
                await expect(row).to_contain_text(UTC_TIME)
                shown = await row.inner_text()
                expected = (t + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M UTC")
                assert expected in shown, shown
    finally:
        await agent.ledger.close()


async def test_the_development_sign_in(
    tmp_path: Path, demo_archive: Path, browser: Browser, artifacts: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", dev_sign_in=True, ui_stub=True, workers=2)
    agent = build_agent(settings)
    await agent.start()
    task = CatalogTask("5151", "user.jdoe.mnist-train/", "jdoe", str(demo_archive))
    app = make_app(agent, settings, TableStarter(agent, {}),
                   directory=TableDirectory({"5151": task}))  # fmt: skip
    try:
        async with serving(app, "127.0.0.1", 0) as base:
            page = await browser.new_page()
            await page.goto(base + "/catalog")
            banner = page.locator("#dev-banner")
            await expect(banner).to_contain_text("Development sign-in")
            await page.locator("#signin").click()
            await expect(banner).to_be_visible()  # on the sign-in page too
            await page.locator("#dev-user").fill("jdoe")
            await page.locator("#dev-groups").fill("atlas/ml")
            await page.screenshot(path=str(artifacts / "dev-sign-in.png"), full_page=True)
            await page.locator("#dev-submit").click()
            await expect(page.locator("#user")).to_have_text("jdoe")
            await expect(banner).to_be_visible()

            # Start: "Starting task 5151…" gives way to what came of it.
            await page.locator("#task-id").fill("5151")
            await page.locator("#start").click()
            message = page.locator("#message")
            await expect(message).to_have_text("Task 5151 is live: open it below.",
                                               timeout=PROGRESS_MS)  # fmt: skip
            # Stop: "Stopping task 5151…" gives way to "Stopped", and the row offers a relaunch.
            row = page.locator('#mine-rows tr[data-task-id="5151"]')
            await row.locator('[data-action="stop"]').click()
            await expect(message).to_have_text("Stopped task 5151.", timeout=PROGRESS_MS)
            await expect(row).to_contain_text("ended")
            await page.screenshot(path=str(artifacts / "dev-sign-in-stopped.png"), full_page=True)
            await row.locator('[data-action="relaunch"]').click()
            await expect(message).to_have_text("Task 5151 is live: open it below.",
                                               timeout=PROGRESS_MS)  # fmt: skip
            inst = await agent.ledger.get(InstanceKey("5151"))
            assert inst is not None and inst.attempt == 2 and inst.phase is Phase.READY

            # Not for anyone else: another host name (a rebinding page), a proxy's client.
            async with aiohttp.ClientSession() as http:
                for headers in ({"Host": "idds-vis.example.org"}, {"X-Forwarded-For": "192.0.2.7"}):
                    async with http.get(base + "/catalog", headers=headers) as resp:
                        assert resp.status == 403
                        assert "loopback" in await resp.text()
    finally:
        await agent.stop()
        for left in await agent.ledger.list():
            await agent.deployer.delete(left)
        await agent.ledger.close()
