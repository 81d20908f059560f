"""Issue 17 in a real browser: the MLflow UI of a task, started by its owner, is reached through
the web app's proxy only, and only by the people it is for.

Real parts: headless chromium, the web app and the agent on loopback (the local deployer with
the web app's proxy in front), a real MLflow UI process that refuses anything but the proxy,
the local OIDC issuer. Only PanDA's task lookup is a table."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
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
PROGRESS_MS = 120_000  # a hang guard for Playwright's waiting assertions, not a timing one
JOHN = {"sub": "9a8b-john", "name": "john smith", "preferred_username": "jsmith",
        "groups": ["cms"]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_only_the_owner_opens_her_mlflow_ui_and_a_visitor_signs_in_first(
    tmp_path: Path, demo_archive: Path, browser: Browser, artifacts: Path
) -> None:
    async with running_issuer() as issuer:
        (tmp_path / "state").mkdir()
        port = free_port()
        settings = settings_for(tmp_path / "state", issuer).replace(
            workers=2, web_host="127.0.0.1", web_port=port)  # the UIs go behind its proxy
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
                assert inst is not None and inst.phase is Phase.READY and inst.url
                assert inst.url.startswith(f"{base}/vis/mlflow-") and "5151" not in inst.url

                # The owner: the MLflow UI, through the proxy, with her experiment.
                await jane.goto(inst.url)
                await expect(jane.get_by_role("link", name=EXPERIMENT).first).to_be_visible(
                    timeout=PROGRESS_MS)
                # Its runs too: the UI's searches are POSTs, passed on with their bodies.
                await expect(jane.get_by_role("link", name="demo-training")).to_be_visible(
                    timeout=PROGRESS_MS)
                await jane.screenshot(path=str(artifacts / "ui-access-owner.png"))

                # Another signed-in user: 403 at the UI's URL.
                issuer.user = dict(JOHN)
                john = await (await browser.new_context()).new_page()
                await john.goto(base + "/catalog")
                await john.locator("#signin").click()
                await expect(john.locator("#user")).to_have_text("john smith".title())
                refused = await john.goto(inst.url)
                assert refused is not None and refused.status == 403
                await expect(john.get_by_role("link", name=EXPERIMENT)).to_have_count(0)

                # A visitor with no session goes through sign-in and comes back to the UI.
                issuer.user = {"sub": "0f1e2d3c-jane", "name": "jane doe",
                               "preferred_username": "jdoe", "groups": ["atlas"]}  # fmt: skip
                visitor = await (await browser.new_context()).new_page()
                seen: list[str] = []
                visitor.on("request", lambda request: seen.append(request.url))
                await visitor.goto(inst.url)
                await expect(visitor.get_by_role("link", name=EXPERIMENT).first).to_be_visible(
                    timeout=PROGRESS_MS)
                assert visitor.url.split("#")[0] == inst.url  # then the task's runs
                assert any(url.startswith(f"{base}/auth/login?") for url in seen)
                assert any(url.startswith(f"{issuer.url}/authorize?") for url in seen)

                # The UI process itself answers nobody but the proxy.
                direct = f"http://127.0.0.1:{inst.handle['port']}{inst.prefix}/"
                async with aiohttp.ClientSession() as http, http.get(direct) as resp:
                    assert resp.status == 403
        finally:
            await agent.stop()
            for left in await agent.ledger.list():
                await agent.deployer.delete(left)
            await agent.ledger.close()
