"""Issue 18 in a real browser: a UI the warm pool handed the demo store to (MLflow's app built
under the member's own prefix, reached under the instance's) renders the task's experiment and
runs like a cold one, with no refusal on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from tests.demo_data import EXPERIMENT

UI_MS = 60_000  # a hang guard, not a timing assertion


@pytest.mark.mlflow
async def test_a_pooled_ui_renders_the_handed_task(
    tmp_path: Path, demo_archive: Path, browser: Browser, artifacts: Path
) -> None:
    agent = build_agent(Settings(state_dir=tmp_path / "state", workers=1,
                                 ui_pool={"mlflow": 1}))  # fmt: skip
    deployer = agent.deployer
    assert isinstance(deployer, LocalProcessDeployer) and deployer.pool is not None
    events = agent.events.subscribe()
    await agent.start()
    try:
        await deployer.pool.wait_until(lambda p: len(p.idle) == 1)
        await agent.submit(VisRequest("6160", source=str(demo_archive)))
        while True:  # the agent's own events: no polling
            inst = await events.get()
            if inst.task_id == "6160" and inst.phase in (Phase.READY, Phase.FAILED):
                break
        assert inst.phase is Phase.READY, inst.reason
        assert "member" in inst.handle
        page = await browser.new_page()
        refused: list[str] = []
        page.on(
            "response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        await page.goto(inst.url)
        await expect(page.get_by_text(EXPERIMENT).first).to_be_visible(timeout=UI_MS)
        await expect(page.get_by_text("1 matching run")).to_be_visible(timeout=UI_MS)
        await page.wait_for_load_state("networkidle")
        await page.screenshot(path=str(artifacts / "warm-pool-ui.png"))
        await expect(page.get_by_text("PERMISSION_DENIED")).to_have_count(0)
        # The read-only gate refuses what a cold UI's refuses too (the user API, the
        # assistant's providers...); nothing fails on the server, nothing names the member.
        assert [r for r in refused if r.startswith("5") or "pool-member" in r] == [], refused
    finally:
        await agent.stop()
        await agent.ledger.close()
        for ui in await deployer.running():
            await deployer.delete_by_name(ui.name, pid=int(ui.handle["pid"]))
