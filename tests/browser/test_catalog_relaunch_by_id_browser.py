"""Issue 19 in a real browser: the catalog offers Relaunch for an ended UI that has no task name
(made by the CLI, by task id), and the button relaunches it. Before, the button was shown only
for records with a name (the guarded relaunch found records by name only).

Real parts: headless chromium, the web app with login (the local OIDC issuer), a real agent and
SQLite ledger; the UI itself is the stand-in deployer's (no MLflow needed for this wall)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.catalog_support import JOHN, site
from tests.oidc_issuer import running_issuer

pytestmark = [pytest.mark.browser]
HANG_GUARD_MS = 60_000  # Playwright's waiting assertions: a hang guard, not a timing assertion


async def test_relaunch_a_cli_made_ui_from_the_catalog(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    async with running_issuer() as issuer, site(tmp_path, issuer) as web:
        inst, _ = await web.agent.submit(VisRequest("5151", source="file:///outputs/5151",
                                                    requested_by=JOHN))  # fmt: skip
        assert inst.task_name is None  # as the CLI makes it
        await web.until("5151", {Phase.READY})
        await web.agent.teardown(inst.key)
        ended = await web.until("5151", {Phase.EXPIRED})

        issuer.user = {"sub": "john-smith", "name": JOHN, "preferred_username": "john-smith",
                       "groups": ["atlas"]}  # fmt: skip
        page = await browser.new_page()
        await page.goto(web.url + "/catalog")
        await page.locator("#signin").click()  # through the issuer, as John
        await expect(page.locator("#user")).to_have_text(JOHN)
        row = page.locator('#mine-rows tr[data-task-id="5151"]')
        await expect(row).to_have_attribute("data-phase", "expired", timeout=HANG_GUARD_MS)
        button = row.locator('[data-action="relaunch"]')
        await expect(button).to_have_count(1)
        await page.screenshot(path=str(artifacts / "catalog-relaunch-by-id.png"), full_page=True)
        await button.click()
        await expect(row).to_have_attribute("data-phase", "ready", timeout=HANG_GUARD_MS)
        again = await web.until("5151", {Phase.READY})
        assert again.attempt == ended.attempt + 1
