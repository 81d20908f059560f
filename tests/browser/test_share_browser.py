"""Issue 17 in a real browser: the owner shares her MLflow UI from the catalog with a colleague
who has no account, then revokes the link; an expired link opens nothing.

Real parts: headless chromium (one context per person), the web app and the agent on loopback
(the local deployer with the web app's proxy in front), a real MLflow UI process that refuses
anything but the proxy, the local OIDC issuer. Only PanDA's task lookup is a table."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import update

from idds_vis.api import make_app, serving
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.domain.models import InstanceKey
from idds_vis.ledger import SqlLedger
from idds_vis.ledger.schema import shares
from idds_vis.runtime.wiring import build_agent
from tests.browser.test_ui_access_browser import PROGRESS_MS, free_port
from tests.catalog_support import JANE, TableDirectory, settings_for
from tests.demo_data import EXPERIMENT
from tests.oidc_issuer import running_issuer
from tests.web_support import TableStarter

pytestmark = [pytest.mark.browser, pytest.mark.mlflow]
STRANGER = {"sub": "5e6f-ana", "name": "ana lima", "preferred_username": "alima",
            "groups": ["lhcb"]}  # fmt: skip


async def test_a_colleague_without_an_account_sees_a_shared_ui_until_it_is_revoked(
    tmp_path: Path, demo_archive: Path, browser: Browser, artifacts: Path
) -> None:
    async with running_issuer() as issuer:
        (tmp_path / "state").mkdir()
        port = free_port()
        settings = settings_for(tmp_path / "state", issuer).replace(
            workers=2, web_host="127.0.0.1", web_port=port)
        agent = build_agent(settings)
        await agent.start()
        task = CatalogTask("5151", "user.jdoe.mnist-train/", JANE, str(demo_archive))
        app = make_app(agent, settings, TableStarter(agent, {}),
                       directory=TableDirectory({"5151": task}))  # fmt: skip
        try:
            async with serving(app, "127.0.0.1", port) as base:
                jane = await (await browser.new_context()).new_page()
                await jane.goto(base + "/catalog")
                await jane.locator("#signin").click()
                await expect(jane.locator("#user")).to_have_text(JANE)
                await jane.locator("#task-id").fill("5151")
                await jane.locator("#start").click()
                row = jane.locator('#mine-rows tr[data-task-id="5151"]')
                await expect(row).to_have_attribute("data-phase", "ready", timeout=PROGRESS_MS)
                inst = await agent.ledger.get(InstanceKey("5151"))
                assert inst is not None and inst.url

                # The owner makes a link in the catalog and sees it listed.
                await row.locator('[data-action="share"]').click()
                await jane.locator("#share-label").fill("Ana (no account)")
                await jane.locator("#share-create").click()
                url = jane.locator("#share-url")
                await expect(url).to_have_value(re.compile(re.escape(f"{base}/s/") + r"[\w.-]+"))
                link = await url.input_value()
                listed = jane.locator('#share-rows tr[data-state="active"]')
                await expect(listed).to_have_count(1)
                await jane.screenshot(path=str(artifacts / "share-created.png"))

                # A colleague with no session opens it: the real MLflow UI, her experiment.
                ana = await (await browser.new_context()).new_page()
                await ana.goto(link)
                # MLflow's own page (whatever view its landing opens) and, through the same
                # cookie, the task's experiment as the UI's own search reads it.
                await expect(ana.get_by_role("link", name="MLflow")).to_be_visible(
                    timeout=PROGRESS_MS)
                search = inst.url + "ajax-api/2.0/mlflow/experiments/search?max_results=10"
                found = await ana.request.get(search)
                assert found.status == 200 and EXPERIMENT in await found.text()
                assert ana.url.startswith(inst.url)
                await ana.screenshot(path=str(artifacts / "share-colleague.png"))

                # The owner revokes it; the colleague's next look is refused with a reason. (Her
                # open page is closed first: its own background reads would meet the refusal,
                # which drops the cookie, and the look after that is an ordinary visitor's.)
                ana_context = ana.context
                await ana.close()
                issuer.user = dict(STRANGER)  # should anything send her to sign in
                await listed.locator('[data-action="revoke"]').click()
                await expect(jane.locator('#share-rows tr[data-state="revoked"]')).to_have_count(1)
                ana = await ana_context.new_page()
                refused = await ana.goto(inst.url)
                assert refused is not None and refused.status == 403
                await expect(ana.locator("#detail")).to_contain_text("revoked")
                await expect(ana.get_by_role("link", name="MLflow")).to_have_count(0)
                gone = await ana.request.get(search, max_redirects=0)
                assert gone.status in (303, 401, 403) and EXPERIMENT not in await gone.text()
                again = await ana.goto(link)
                assert again is not None and again.status == 403

                # An expired link (its time moved past in the ledger) opens nothing either.
                await jane.locator("#share-create").click()
                await expect(url).not_to_have_value(link)
                await expect(jane.locator('#share-rows tr[data-state="active"]')).to_have_count(1)
                second = await url.input_value()
                assert second != link
                ledger = agent.ledger
                assert isinstance(ledger, SqlLedger)
                past = agent.clock.now() - timedelta(seconds=1)
                async with ledger.engine.begin() as conn:
                    await conn.execute(update(shares).where(shares.c.revoked_at.is_(None))
                                       .values(expires_at=past))  # fmt: skip
                bob = await (await browser.new_context()).new_page()
                expired = await bob.goto(second)
                assert expired is not None and expired.status == 403
                await expect(bob.locator("#detail")).to_contain_text("expired")
                await bob.screenshot(path=str(artifacts / "share-expired.png"))

                # The visibility control: shared with everyone signed in, at once.
                await jane.locator("#visibility").select_option("signed-in")
                await jane.locator("#visibility-save").click()
                await expect(jane.locator("#message")).to_contain_text("signed-in")
                shared = await agent.ledger.get(InstanceKey("5151"))
                assert shared is not None and shared.visibility == "signed-in"
        finally:
            await agent.stop()
            for left in await agent.ledger.list():
                await agent.deployer.delete(left)
            await agent.ledger.close()
