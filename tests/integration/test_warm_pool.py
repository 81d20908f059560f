"""The local deployer's warm pool (issue 18), with the stand-in UI's pool mode as members (real
processes, the real hand-over over loopback, the real readiness probe): a request takes a
member, a member serves one instance only, the pool refills, members of another version are
recycled, a restarted agent finds members again, and nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.agent.service import Agent
from idds_vis.deploy import local_processes as procs
from idds_vis.deploy.local import STAND_IN_POOL_MEMBER, STAND_IN_UI, LocalProcessDeployer
from idds_vis.deploy.pool import HANDOVER_PATH, SECRET_FILE, SECRET_HEADER, LocalPool
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.fakes import FakeStager


@dataclass
class Site:
    agent: Agent
    deployer: LocalProcessDeployer
    ledger: SqlLedger
    metrics: AgentMetrics


def make_deployer(
    state: Path,
    label: str,
    *,
    size: int = 2,
    version: str = "v1",
    metrics: AgentMetrics | None = None,
    pool_argv: tuple[str, ...] = STAND_IN_POOL_MEMBER,
) -> LocalProcessDeployer:
    return LocalProcessDeployer(state, label=label, ui_argv=STAND_IN_UI, poll_interval=0.05,
                                pool_size=size, pool_argv=pool_argv, pool_version=version,
                                pool_observer=metrics)  # fmt: skip


def make_agent(ledger: SqlLedger, deployer: LocalProcessDeployer, metrics: AgentMetrics) -> Agent:
    return Agent(ledger=ledger, stager=FakeStager(), deployer=deployer,
                 probe=HttpReadinessProbe(interval=0.05), clock=SystemClock(),
                 poll_interval=0.05, metrics=metrics)  # fmt: skip


@pytest_asyncio.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    monkeypatch.setenv("IDDS_VIS_STUB_JOURNAL", str(tmp_path / "journal.jsonl"))
    metrics = AgentMetrics()
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    deployer = make_deployer(tmp_path / "state", f"pool-{tmp_path.name}", metrics=metrics)
    agent = make_agent(ledger, deployer, metrics)
    await agent.start()
    try:
        yield Site(agent, deployer, ledger, metrics)
    finally:
        for inst in await ledger.list():
            await deployer.delete(inst)
        await agent.stop()
        await ledger.close()


def pool_of(deployer: LocalProcessDeployer) -> LocalPool:
    assert deployer.pool is not None
    return deployer.pool


async def full(deployer: LocalProcessDeployer) -> set[int]:
    pool = pool_of(deployer)
    await pool.wait_until(lambda p: len(p.idle) == p.size)
    return {m.pid for m in pool.idle}


async def launch(site: Site, task_id: str) -> Instance:
    events = site.agent.events.subscribe()
    await site.agent.submit(VisRequest(task_id, source=f"dir:/{task_id}"))
    while True:  # the agent's own events: no polling
        inst = await events.get()
        if inst.task_id == task_id and inst.phase in (Phase.READY, Phase.FAILED):
            assert inst.phase is Phase.READY, inst.reason
            return inst


async def end(site: Site, inst: Instance) -> None:
    events = site.agent.events.subscribe()
    await site.agent.teardown(inst.key)
    while inst.phase is not Phase.EXPIRED:
        inst = await events.get()


def journal(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def members_running(label: str, state: Path) -> list[procs.PoolProcess]:
    return procs.find_pool_members(label, state / "pool")


async def test_a_request_takes_a_member_which_serves_that_task_only_and_the_pool_refills(
    site: Site, tmp_path: Path
) -> None:
    warm = await full(site.deployer)
    a = await launch(site, "1001")
    assert a.handle["pid"] in warm and a.handle.get("member")
    assert pool_of(site.deployer).hits == 1
    refilled = await full(site.deployer)
    assert a.handle["pid"] not in refilled  # never back in the pool

    # The member that serves A takes no second hand-over, not even with the agent's secret.
    member_dir = site.deployer.pool_dir / str(a.handle["member"])
    secret = (member_dir / SECRET_FILE).read_text()
    b_dir = site.deployer.instance_dir("someone-else") / "staged"
    b_dir.mkdir(parents=True)
    url = f"http://127.0.0.1:{a.handle['port']}{HANDOVER_PATH}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"staged": str(b_dir.resolve()), "prefix": "/vis/b"},
                             headers={SECRET_HEADER: secret}) as resp:  # fmt: skip
            assert resp.status == 409
        # An idle member serves nothing before its hand-over, and hands over to nobody else.
        idle = pool_of(site.deployer).idle[0]
        base = f"http://127.0.0.1:{idle.port}"
        async with http.get(f"{base}{a.prefix}/health") as resp:
            assert resp.status == 503
        async with http.post(base + HANDOVER_PATH, json={"staged": str(b_dir.resolve()),
                                                         "prefix": "/vis/b"}) as resp:  # fmt: skip
            assert resp.status == 403

    # After A ends, B gets another process: the one that served A is gone with A.
    await end(site, a)
    assert not psutil.pid_exists(int(a.handle["pid"])) or (
        psutil.Process(int(a.handle["pid"])).status() == psutil.STATUS_ZOMBIE
    )
    assert not member_dir.exists()
    b = await launch(site, "1002")
    assert b.handle["pid"] != a.handle["pid"] and b.handle["member"] != a.handle["member"]
    handed = [e for e in journal(tmp_path) if e["event"] == "handed"]
    by_pid: dict[object, list[object]] = {}
    for event in handed:
        by_pid.setdefault(event["pid"], []).append(event["prefix"])
    assert all(len(prefixes) == 1 for prefixes in by_pid.values())  # one task per process
    exposition = site.metrics.exposition().decode()
    assert 'idds_vis_pool_hits_total{tool="mlflow"} 2.0' in exposition
    assert 'idds_vis_pool_size{tool="mlflow"}' in exposition
    assert "idds_vis_pool_refill_seconds_count" in exposition


async def test_an_agent_restart_finds_members_again_and_recycles_another_versions(
    tmp_path: Path,
) -> None:
    state, label = tmp_path / "state", f"pool-{tmp_path.name}"
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    metrics = AgentMetrics()
    first = make_deployer(state, label, metrics=metrics)
    agent = make_agent(ledger, first, metrics)
    await agent.start()
    second: LocalProcessDeployer | None = None
    try:
        warm = await full(first)
        a = await launch(Site(agent, first, ledger, metrics), "2001")
        await full(first)
        idle_v1 = {m.pid for m in pool_of(first).idle}
        # The agent dies without its shutdown: its idle members and A's UI live on.
        pool_of(first)._task.cancel()  # type: ignore[union-attr]
        first.pool = None
        await agent.stop()

        # Restarted with the same version: the idle members rejoin, A's UI is adopted.
        again = make_deployer(state, label, metrics=metrics)
        agent = make_agent(ledger, again, metrics)
        report = await agent.start()
        assert a.name in report.adopted
        await pool_of(again).wait_until(lambda p: {m.pid for m in p.idle} == idle_v1)
        assert [ui.name for ui in await again.running()] == [a.name]
        assert a.handle["pid"] in warm
        pool_of(again)._task.cancel()  # type: ignore[union-attr]
        again.pool = None
        await agent.stop()

        # Restarted with a new version: the old members are stopped and replaced.
        second = make_deployer(state, label, version="v2", metrics=metrics)
        agent = make_agent(ledger, second, metrics)
        await agent.start()
        fresh = await full(second)
        assert not fresh & idle_v1
        assert {m.pid for m in members_running(label, state) if m.claimed_by is None} == fresh
        assert all(m.version == "v2" for m in members_running(label, state)
                   if m.claimed_by is None)  # fmt: skip
        inst = await ledger.get(a.key)
        assert inst is not None and inst.phase is Phase.READY  # A's UI untouched throughout
    finally:
        for inst in await ledger.list():
            await (second or first).delete(inst)
        await agent.stop()
        await ledger.close()
    # Nothing behind: no member process of this label, no member or instance directory.
    assert members_running(label, state) == []
    assert [p.name for p in (state / "pool").iterdir()] == []
    assert [p.name for p in (state / "instances").iterdir()] == []


async def test_a_restart_with_a_smaller_pool_keeps_only_that_many(tmp_path: Path) -> None:
    """Two idle members left by an agent that died; the next runs with a pool of one: it keeps
    one (the younger) and stops the other (an operator's first run found both kept)."""
    state, label = tmp_path / "state", f"pool-{tmp_path.name}"
    first = make_deployer(state, label, size=2)
    pool_of(first).start()
    left = await full(first)
    pool_of(first)._task.cancel()  # type: ignore[union-attr]  # dies without its shutdown
    first.pool = None
    assert {m.pid for m in members_running(label, state)} == left
    smaller = make_deployer(state, label, size=1)
    try:
        pool_of(smaller).start()
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            await pool_of(smaller).wait_until(lambda p: len(p.idle) == 1)
        (kept,) = pool_of(smaller).idle
        assert kept.pid in left
        while pool_of(smaller)._background:  # the retirement runs in the background
            await asyncio.gather(*pool_of(smaller)._background)
        assert {m.pid for m in members_running(label, state)} == {kept.pid}
    finally:
        await smaller.close()
    assert members_running(label, state) == []


async def test_an_empty_pool_falls_back_to_a_cold_start(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    # Members that never start: every launch finds the pool empty.
    deployer = make_deployer(tmp_path / "state", f"pool-{tmp_path.name}", metrics=metrics,
                             pool_argv=("-c", "raise SystemExit(3)"))  # fmt: skip
    agent = make_agent(ledger, deployer, metrics)
    await agent.start()
    try:
        inst = await launch(Site(agent, deployer, ledger, metrics), "3001")
        assert "member" not in inst.handle
        assert pool_of(deployer).misses >= 1 and pool_of(deployer).hits == 0
        assert 'idds_vis_pool_misses_total{tool="mlflow"} 1.0' in metrics.exposition().decode()
    finally:
        for inst in await ledger.list():
            await deployer.delete(inst)
        await agent.stop()
        await ledger.close()
    assert members_running(f"pool-{tmp_path.name}", tmp_path / "state") == []


def test_members_are_not_uis_until_handed_over(tmp_path: Path) -> None:
    """An idle member carries no instance name: the reconciler never sees it as a UI."""
    env = {"IDDS_VIS_UI_LABEL": "x", procs.MEMBER_ENV: "0" * 32, "IDDS_VIS_UI_PORT": "1"}
    assert procs._describe(1, env, "x", tmp_path) is None
    (tmp_path / ("0" * 32)).mkdir()
    (tmp_path / ("0" * 32) / procs.CLAIM_FILE).write_text("mlflow-1-abc")
    found = procs._describe(1, env, "x", tmp_path)
    assert found is not None and found.name == "mlflow-1-abc" and found.member == "0" * 32
    assert procs._describe(1, {**env, procs.MEMBER_ENV: "../../etc"}, "x", tmp_path) is None
    assert os.sep not in (found.member or "")


async def test_a_member_another_agent_claimed_is_left_to_it(site: Site) -> None:
    """Claims are exclusive: of two agents on one state, one hands a member over; the other
    starts cold and does not stop the member (it serves the first agent's instance)."""
    pool = pool_of(site.deployer)
    await full(site.deployer)
    for member in pool.idle:  # another agent got there first, for every idle member
        assert await pool.claim(member, "mlflow-9-other")
        assert not await pool.claim(member, "mlflow-9-again")
    taken = {m.pid for m in pool.idle}
    inst = await launch(site, "4001")
    assert "member" not in inst.handle and inst.handle["pid"] not in taken
    assert all(procs.exit_code(pid) is None for pid in taken)  # still running, theirs
    for pid in taken:
        procs.stop_process_group(pid)


async def test_an_upgrade_in_place_recycles_the_idle_members(site: Site) -> None:
    pool = pool_of(site.deployer)
    before = await full(site.deployer)
    pool._version_of = lambda: "v2"  # what ui_version() says once pip upgraded MLflow
    pool._wake.set()  # the periodic check, now
    await pool.wait_until(
        lambda p: len(p.idle) == p.size and all(m.version == "v2" for m in p.idle)
    )
    assert not {m.pid for m in pool.idle} & before


async def test_a_dead_members_directory_goes_with_its_instance(site: Site) -> None:
    await full(site.deployer)
    a = await launch(site, "5001")
    member_dir = site.deployer.pool_dir / str(a.handle["member"])
    procs.stop_process_group(int(a.handle["pid"]))  # the UI died on its own
    await site.deployer.delete(a)
    assert not member_dir.exists()
    assert not site.deployer.instance_dir(a.name).exists()


async def test_behind_the_web_app_a_member_answers_its_proxy_only(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    deployer = make_deployer(tmp_path / "state", f"pool-{tmp_path.name}", metrics=metrics)
    deployer.proxy_base = "http://web.invalid"  # the web app's proxy (issue 17)
    agent = make_agent(ledger, deployer, metrics)
    await agent.start()
    try:
        await full(deployer)
        inst = await launch(Site(agent, deployer, ledger, metrics), "6001")
        assert "member" in inst.handle  # verified ready through the proxy's header
        upstream = await deployer.upstream(inst)
        assert upstream is not None
        origin, header = upstream
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{origin}{inst.prefix}/health") as resp:
                assert resp.status == 403
            async with http.get(f"{origin}{inst.prefix}/health", headers=header) as resp:
                assert resp.status == 200
    finally:
        for inst in await ledger.list():
            await deployer.delete(inst)
        await agent.stop()
        await ledger.close()
