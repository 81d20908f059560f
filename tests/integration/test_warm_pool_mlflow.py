"""A real MLflow pool member (issue 18): the agent hands it the demo training's staged store,
it serves that store read-only under the instance's prefix, and nothing stays behind."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from idds_vis.deploy import local_processes as procs
from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.deploy.pool import HANDOVER_PATH
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from idds_vis.ui.readonly_gate import READ_ONLY
from tests.demo_data import EXPERIMENT

pytestmark = pytest.mark.mlflow


async def test_a_real_member_serves_the_handed_store_read_only(
    tmp_path: Path, demo_archive: Path
) -> None:
    state = tmp_path / "state"
    agent = build_agent(Settings(state_dir=state, workers=1, ui_pool={"mlflow": 1}))
    deployer = agent.deployer
    assert isinstance(deployer, LocalProcessDeployer) and deployer.pool is not None
    events = agent.events.subscribe()
    await agent.start()
    try:
        await deployer.pool.wait_until(lambda p: len(p.idle) == 1)
        member = deployer.pool.idle[0]
        warm = member.pid
        idle = f"http://127.0.0.1:{member.port}"
        async with aiohttp.ClientSession() as http:
            # Idle: nothing served, under any prefix, nor to a hand-over without the secret.
            for path in ("/vis/idds-vis-pool-member/health", "/vis/anything/"):
                async with http.get(idle + path) as resp:
                    assert resp.status == 503
            async with http.post(idle + HANDOVER_PATH, json={}) as resp:
                assert resp.status == 403
        req = VisRequest("5150", source=str(demo_archive))
        await agent.submit(req)
        while True:  # the agent's own events: no polling
            inst = await events.get()
            if inst.task_id == "5150" and inst.phase in (Phase.READY, Phase.FAILED):
                break
        assert inst.phase is Phase.READY, inst.reason
        assert inst.handle["pid"] == warm  # the warm member, not a cold start
        base = f"http://127.0.0.1:{inst.handle['port']}{inst.prefix}/"
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "ajax-api/2.0/mlflow/experiments/search",
                                 json={"max_results": 10}) as resp:  # fmt: skip
                assert resp.status == 200
                names = [e["name"] for e in (await resp.json())["experiments"]]
            assert EXPERIMENT in names
            async with http.post(base + "ajax-api/2.0/mlflow/experiments/create",
                                 json={"name": "x"}) as resp:  # fmt: skip
                assert resp.status == 403
                assert (await resp.json())["message"] == READ_ONLY
            # The member's own prefix is not a way around the instance's.
            member_base = f"http://127.0.0.1:{inst.handle['port']}/vis/idds-vis-pool-member/"
            async with http.get(member_base + "health") as resp:
                assert resp.status == 403
        await agent.teardown(req.key)
        while inst.phase is not Phase.EXPIRED:
            inst = await events.get()
    finally:
        await agent.stop()
        await agent.ledger.close()
    assert procs.find_pool_members(deployer.label, deployer.pool_dir) == []
    assert list(deployer.pool_dir.iterdir()) == []
    assert list((state / "instances").iterdir()) == []
