"""A person in a real browser uses the self-service catalog: signs in through the local OIDC
issuer, starts a visualization of their task, watches its progress, opens the MLflow UI,
extends it, stops it, and sees the catalog follow.

Real parts: headless chromium, the web app and the agent on loopback, a real OIDC issuer
(authorization code + PKCE), real MLflow UI processes through the local deployer, a real
SQLite ledger. Only PanDA's task lookup is a table (``TableDirectory``)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from idds_vis.api import make_app, serving
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.runtime.wiring import build_agent
from tests.catalog_support import JANE, TableDirectory, settings_for
from tests.demo_data import EXPERIMENT
from tests.oidc_issuer import running_issuer
from tests.web_support import TableStarter

pytestmark = [pytest.mark.browser, pytest.mark.mlflow]
# Hang guards (milliseconds) for Playwright's waiting assertions, not timing assertions: a UI
# takes about 7 s to start on an idle 2-core machine, several times that on a loaded one.
PROGRESS_MS = 120_000


async def test_sign_in_start_follow_open_extend_and_stop_from_the_catalog(
    tmp_path: Path, demo_archive: Path, browser: Browser, artifacts: Path
) -> None:
    async with running_issuer() as issuer:
        (tmp_path / "state").mkdir()
        settings = settings_for(tmp_path / "state", issuer).replace(workers=2, quota_per_user=2)
        agent = build_agent(settings)
        await agent.start()
        task = CatalogTask("5151", "user.jdoe.mnist-train/", JANE, str(demo_archive))
        app = make_app(agent, settings, TableStarter(agent, {}),
                       directory=TableDirectory({"5151": task}))  # fmt: skip
        try:
            async with serving(app, "127.0.0.1", 0) as base:
                page = await browser.new_page()
                await page.goto(base + "/catalog")
                await expect(page.locator("#tools tr[data-tool=mlflow]")).to_contain_text("2d")
                await page.locator("#signin").click()  # through the issuer and back
                await expect(page.locator("#user")).to_have_text(JANE)
                assert page.url == base + "/catalog"

                await page.locator("#task-id").fill("5151")
                await page.locator("#ttl").fill("1h")
                await page.locator("#start").click()
                row = page.locator('#mine-rows tr[data-task-id="5151"]')
                # The start is followed live: an in-flight step first, then ready.
                await expect(row).to_have_attribute("data-phase", "starting", timeout=PROGRESS_MS)
                await expect(row.locator(".step-label")).to_have_text(
                    "Waiting for the UI to answer")
                await page.screenshot(path=str(artifacts / "catalog-starting.png"), full_page=True)
                await expect(row).to_have_attribute("data-phase", "ready", timeout=PROGRESS_MS)
                await expect(row.locator(".countdown")).to_have_text(re.compile(r"^(59 min|1 h)"))
                await expect(page.locator("#capacity")).to_contain_text("yours: 1 of 2 in use")

                # Open it: the MLflow UI of the task, with its experiment.
                async with page.context.expect_page() as opened:
                    await row.locator('[data-action="open"]').click()
                ui = await opened.value
                await expect(ui.get_by_role("link", name=EXPERIMENT).first).to_be_visible(
                    timeout=PROGRESS_MS)
                await ui.close()

                before = await agent.ledger.get(InstanceKey("5151"))
                assert before is not None and before.expires_at is not None
                await row.locator('[data-field="by"]').fill("30m")
                await row.locator('[data-action="extend"]').click()
                await expect(page.locator("#message")).to_have_text("Extended task 5151.")
                await expect(row.locator(".countdown")).to_have_text(re.compile(r"^1 h (29|30)"))
                after = await agent.ledger.get(InstanceKey("5151"))
                assert after is not None and after.expires_at == before.expires_at + timedelta(
                    minutes=30)
                await page.screenshot(path=str(artifacts / "catalog-ready.png"), full_page=True)

                await row.locator('[data-action="stop"]').click()
                await expect(row).to_have_attribute("data-phase", "expired", timeout=PROGRESS_MS)
                await expect(row.locator('[data-action="open"]')).to_have_count(0)
                await expect(page.locator("#capacity")).to_contain_text("yours: 0 of 2 in use")
                await page.screenshot(path=str(artifacts / "catalog-stopped.png"), full_page=True)
            ended = await agent.ledger.get(InstanceKey("5151"))
            assert ended is not None and ended.phase is Phase.EXPIRED
            trail = [(a.actor, a.action) for a in await agent.ledger.actions(InstanceKey("5151"))]
            assert trail == [(JANE, "start"), (JANE, "extend"), (JANE, "stop")]
            assert issuer.verifier_checks == [True]
        finally:
            await agent.stop()
            for inst in await agent.ledger.list():
                await agent.deployer.delete(inst)
            await agent.ledger.close()
