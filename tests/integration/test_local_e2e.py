"""The whole local path with real parts: real MLflow UI processes, real HTTP, real SQLite ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import aiohttp
import psutil
import pytest

from idds_vis.agent.service import Agent
from idds_vis.deploy.local_processes import find_ui_processes
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from tests.demo_data import EXPERIMENT, make_file_store_archive
from tests.fakes import wait_for_all, wait_for_phase

pytestmark = pytest.mark.mlflow
DONE = {Phase.READY, Phase.FAILED}


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", workers=2, **kw)  # type: ignore[arg-type]


async def run_until(agent: Agent, req: VisRequest, phases: set[Phase]) -> Instance:
    events = agent.events.subscribe()
    current = await agent.ledger.get(req.key)
    if current is not None and current.phase in phases:
        return current
    async with asyncio.timeout(240):  # a hang guard, not a timing assertion
        return await wait_for_phase(agent, events, req.task_id, phases)


async def test_archive_becomes_a_live_read_only_ui_then_nothing_is_left(tmp_path, demo_archive):
    settings = settings_for(tmp_path)
    agent = build_agent(settings)
    await agent.start()
    try:
        req = VisRequest("user.jdoe/4242", source=str(demo_archive), ttl=timedelta(hours=24))
        await agent.submit(req)
        ready = await run_until(agent, req, DONE)
        assert ready.phase is Phase.READY, ready.reason
        assert ready.url and ready.url.endswith(f"{ready.prefix}/")
        base = ready.url
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as resp:
                assert resp.status == 200
                assert "MLflow" in await resp.text()
            api = base + "ajax-api/2.0/mlflow/"
            async with http.post(api + "experiments/search", json={"max_results": 10}) as resp:
                names = [e["name"] for e in (await resp.json())["experiments"]]
            assert EXPERIMENT in names
            exp_id = next(
                e
                for e in (
                    await (
                        await http.post(api + "experiments/search", json={"max_results": 10})
                    ).json()
                )["experiments"]
                if e["name"] == EXPERIMENT
            )["experiment_id"]
            async with http.post(api + "runs/search", json={"experiment_ids": [exp_id]}) as resp:
                runs = (await resp.json())["runs"]
            assert len(runs) == 1
            run_id = runs[0]["info"]["run_id"]
            metric = {m["key"]: m for m in runs[0]["data"]["metrics"]}
            assert metric["loss"]["step"] == 59
            # The artefact written on the 'training machine' is served from the staged copy.
            async with http.get(
                base + "get-artifact", params={"path": "weights.txt", "run_uuid": run_id}
            ) as resp:
                assert resp.status == 200
                assert "w0 =" in await resp.text()
            # Read-only: a write through the UI's own API fails and changes nothing.
            async with http.post(api + "experiments/create", json={"name": "vandal"}) as resp:
                assert resp.status >= 400
            async with http.post(api + "experiments/search", json={"max_results": 10}) as resp:
                assert "vandal" not in [e["name"] for e in (await resp.json())["experiments"]]
        assert [p.name for p in find_ui_processes(settings.ui_label)] == [ready.name]

        await agent.teardown(req.key)
        ended = await run_until(agent, req, {Phase.EXPIRED})
        assert ended.phase is Phase.EXPIRED
        assert find_ui_processes(settings.ui_label) == []
        assert not (settings.state_dir / "instances" / ready.name).exists()
    finally:
        await agent.stop()
        await agent.ledger.close()


async def test_bad_sources_fail_with_reasons_while_good_ones_are_served(tmp_path, demo_archive):
    not_archive = tmp_path / "noise.bin"
    not_archive.write_bytes(os.urandom(4096))
    agent = build_agent(settings_for(tmp_path))
    events = agent.events.subscribe()
    await agent.start()
    try:
        bad_missing = VisRequest("bad-1", source=str(tmp_path / "nope.tgz"))
        bad_noise = VisRequest("bad-2", source=str(not_archive))
        good = VisRequest("good-1", source=str(demo_archive))
        for req in (bad_missing, bad_noise, good):
            await agent.submit(req)
        async with asyncio.timeout(240):
            done = await wait_for_all(events, {"bad-1", "bad-2", "good-1"}, DONE)
        missing, noise, served = done["bad-1"], done["bad-2"], done["good-1"]
        assert missing.phase is Phase.FAILED and "nope.tgz" in (missing.reason or "")
        assert noise.phase is Phase.FAILED and "archive" in (noise.reason or "")
        assert served.phase is Phase.READY, served.reason
    finally:
        await agent.stop()
        for inst in await agent.ledger.list():
            await agent.deployer.delete(inst)
        await agent.ledger.close()


async def test_restart_adopts_restarts_and_removes_orphans(tmp_path, demo_archive):
    settings = settings_for(tmp_path)
    first = build_agent(settings)
    events = first.events.subscribe()
    await first.start()
    keep = VisRequest("keep-1", source=str(demo_archive))
    lost = VisRequest("lost-1", source=str(demo_archive))
    await first.submit(keep)
    await first.submit(lost)
    async with asyncio.timeout(240):
        both = await wait_for_all(events, {"keep-1", "lost-1"}, DONE)
    kept, gone = both["keep-1"], both["lost-1"]
    assert kept.phase is gone.phase is Phase.READY
    await first.stop()
    await first.ledger.close()

    # While no agent runs: one UI dies, and one UI appears that the ledger never heard of.
    by_name = {p.name: p for p in find_ui_processes(settings.ui_label)}
    dying = psutil.Process(by_name[gone.name].pid)  # before the kill: the agent's child
    os.killpg(dying.pid, signal.SIGKILL)  # watcher thread may reap it at once
    dying.wait(timeout=30)
    orphan_dir = settings.state_dir / "instances" / kept.name / "staged"
    orphan = psutil.Popen(
        [sys.executable, "-m", "idds_vis", "serve-ui", "--staged", str(orphan_dir),
         "--prefix", "/vis/orphan", "--port", "0"],
        env={**os.environ, "IDDS_VIS_UI_LABEL": settings.ui_label,
             "IDDS_VIS_UI_NAME": "mlflow-orphan-1"},
        start_new_session=True,
    )  # fmt: skip

    second = build_agent(settings)
    report = await second.start()
    try:
        assert report.removed_orphans == ["mlflow-orphan-1"]
        assert report.adopted == [kept.name]
        assert report.restarted == [gone.name]
        orphan.wait(timeout=30)  # raises TimeoutExpired if the orphan survived
        assert not orphan.is_running()
        again = await run_until(second, lost, DONE)
        assert again.phase is Phase.READY, again.reason
        assert again.expires_at == gone.expires_at
        names = sorted(p.name for p in find_ui_processes(settings.ui_label))
        assert names == sorted([kept.name, gone.name])
        assert len(await second.ledger.list()) == 2
    finally:
        await second.stop()
        for inst in await second.ledger.list():
            await second.deployer.delete(inst)
        await second.ledger.close()


@pytest.mark.postgres
async def test_the_same_path_on_a_postgresql_ledger(tmp_path, demo_archive, pg_url):
    settings = settings_for(tmp_path, database_url=pg_url)
    agent = build_agent(settings)
    await agent.start()
    try:
        req = VisRequest("pg-1", source=str(demo_archive), ttl=timedelta(hours=1))
        results = await asyncio.gather(*(agent.submit(req) for _ in range(5)))
        assert sum(created for _, created in results) == 1
        ready = await run_until(agent, req, DONE)
        assert ready.phase is Phase.READY, ready.reason
        async with aiohttp.ClientSession() as http, http.get(ready.url or "") as resp:
            assert resp.status == 200
        await agent.teardown(req.key)
        ended = await run_until(agent, req, {Phase.EXPIRED})
        assert [e.phase for e in await agent.ledger.history(req.key)][-1] is Phase.EXPIRED
        assert ended.phase is Phase.EXPIRED
        assert find_ui_processes(settings.ui_label) == []
    finally:
        await agent.stop()
        await agent.ledger.close()


async def test_a_zipped_mlruns_file_store_is_served_with_its_artefacts(tmp_path):
    archive = make_file_store_archive(tmp_path)
    settings = settings_for(tmp_path)
    agent = build_agent(settings)
    await agent.start()
    try:
        req = VisRequest("fs-1", source=str(archive))
        await agent.submit(req)
        ready = await run_until(agent, req, DONE)
        assert ready.phase is Phase.READY, ready.reason
        api = (ready.url or "") + "ajax-api/2.0/mlflow/"
        async with aiohttp.ClientSession() as http:
            async with http.post(api + "experiments/search", json={"max_results": 10}) as resp:
                exps = {e["name"]: e["experiment_id"] for e in (await resp.json())["experiments"]}
            assert "file-store-training" in exps
            body = {"experiment_ids": [exps["file-store-training"]]}
            async with http.post(api + "runs/search", json=body) as resp:
                (run,) = (await resp.json())["runs"]
            assert {m["key"]: m["step"] for m in run["data"]["metrics"]} == {"val_loss": 49}
            params = {"path": "summary.txt", "run_uuid": run["info"]["run_id"]}
            async with http.get((ready.url or "") + "get-artifact", params=params) as resp:
                assert resp.status == 200
                assert "best val_loss" in await resp.text()
    finally:
        await agent.stop()
        for inst in await agent.ledger.list():
            await agent.deployer.delete(inst)
        await agent.ledger.close()
