"""The agent's logic (pipeline, idempotency, reaper, reconciler) on a real SQLite ledger."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.events import EventBus
from idds_vis.agent.reaper import Reaper
from idds_vis.domain.errors import DeployError, NotFound
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import HAPPY_PATH, Phase
from idds_vis.ledger import SqlLedger
from tests.fakes import (
    FakeDeployer,
    ManualClock,
    make_agent,
    wait_for_all,
    wait_for_phase,
)

READY_OR_FAILED = {Phase.READY, Phase.FAILED}


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    return SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture
def deployer(tmp_path: Path) -> FakeDeployer:
    return FakeDeployer(tmp_path / "instances")


async def test_request_goes_through_every_phase_and_is_torn_down(ledger, deployer):
    agent = make_agent(ledger, deployer)
    events = agent.events.subscribe()
    await agent.start()
    try:
        req = VisRequest("1001", source="archive.tgz", ttl=timedelta(hours=1))
        await agent.submit(req)
        async with asyncio.timeout(30):
            ready = await wait_for_phase(agent, events, "1001", READY_OR_FAILED)
        assert ready.phase is Phase.READY, ready.reason
        assert ready.url == f"http://ui.example{ready.prefix}/"
        assert ready.expires_at is not None
        assert timedelta(minutes=59) < ready.expires_at - ready.updated_at <= timedelta(hours=1)
        await agent.teardown(req.key)
        async with asyncio.timeout(30):
            ended = await wait_for_phase(agent, events, "1001", {Phase.EXPIRED})
        assert ended.phase is Phase.EXPIRED
        assert deployer.live == {}
        history = [e.phase for e in await ledger.history(req.key)]
        assert history == list(HAPPY_PATH)
        stamps = [e.at for e in await ledger.history(req.key)]
        assert stamps == sorted(stamps)
    finally:
        await agent.stop()
        await ledger.close()


async def test_duplicate_requests_give_one_instance_and_one_record(ledger, deployer):
    agent = make_agent(ledger, deployer)
    events = agent.events.subscribe()
    await agent.start()
    try:
        req = VisRequest("2002", source="archive.tgz")
        results = await asyncio.gather(*(agent.submit(req) for _ in range(10)))
        assert sum(created for _, created in results) == 1
        async with asyncio.timeout(30):
            await wait_for_phase(agent, events, "2002", READY_OR_FAILED)
        _, created_later = await agent.submit(req)
        assert not created_later
        assert deployer.deploys == [req.key.name]
        assert [i.task_id for i in await ledger.list()] == ["2002"]
    finally:
        await agent.stop()
        await ledger.close()


async def test_a_failed_request_keeps_its_reason_and_the_agent_goes_on(ledger, deployer):
    deployer.fail_start.add("3004")
    agent = make_agent(ledger, deployer)
    events = agent.events.subscribe()
    await agent.start()
    try:
        await agent.submit(VisRequest("3003", source="bad:/nothing"))
        await agent.submit(VisRequest("3004", source="archive.tgz"))
        await agent.submit(VisRequest("3005", source="archive.tgz"))
        async with asyncio.timeout(30):
            done = await wait_for_all(events, {"3003", "3004", "3005"}, READY_OR_FAILED)
        bad, crashed, good = done["3003"], done["3004"], done["3005"]
        assert bad.phase is Phase.FAILED and bad.reason == "no MLflow data in bad:/nothing"
        assert crashed.phase is Phase.FAILED and "exited while starting" in (crashed.reason or "")
        assert good.phase is Phase.READY
        assert set(deployer.live) == {good.name}  # the failed start left nothing running
    finally:
        await agent.stop()
        await ledger.close()


async def test_reaper_expires_on_time_and_extend_moves_it(ledger, deployer):
    clock = ManualClock()
    agent = make_agent(ledger, deployer, clock=clock)
    events = agent.events.subscribe()
    await agent.start()
    try:
        req = VisRequest("4004", source="archive.tgz", ttl=timedelta(hours=24))
        await agent.submit(req)
        async with asyncio.timeout(30):
            ready = await wait_for_phase(agent, events, "4004", READY_OR_FAILED)
        assert ready.expires_at == clock.now() + timedelta(hours=24)
        extended = await agent.extend(req.key, timedelta(hours=2))
        assert extended.expires_at == ready.expires_at + timedelta(hours=2)
        assert deployer.expiries[ready.name] == extended.expires_at  # moved on the UI too
        # At the old expiry nothing happens; the reaper's own wake-up (no nudge) finds the new one.
        await clock.advance_to(ready.expires_at + timedelta(seconds=1))
        await agent.reaper.reap_due()
        assert (await ledger.get(req.key)).phase is Phase.READY
        await clock.advance_to(extended.expires_at)
        async with asyncio.timeout(30):
            ended = await wait_for_phase(agent, events, "4004", {Phase.EXPIRED})
        expiring = next(e for e in await ledger.history(req.key) if e.phase is Phase.EXPIRING)
        assert expiring.at == extended.expires_at  # on time by the agent's clock
        assert ended.name not in deployer.live
    finally:
        await agent.stop()
        await ledger.close()


async def test_reaper_ends_instances_due_together_side_by_side(ledger, deployer):
    """Three due at once are all marked expiring before any deletion ends (one after the
    other, each would wait on the deletions before it); a failing one holds up no other."""
    clock = ManualClock()
    agent = make_agent(ledger, deployer, clock=clock)
    events = agent.events.subscribe()
    await agent.start()
    tasks = {"4101", "4102", "4103"}
    try:
        for task in sorted(tasks):
            await agent.submit(VisRequest(task, source="archive.tgz", ttl=timedelta(hours=1)))
        async with asyncio.timeout(30):
            await wait_for_all(events, tasks, {Phase.READY})
    finally:
        await agent.stop()  # the fake UIs stay "running", as real ones would
    released = asyncio.Event()
    deployer.hold_delete = dict.fromkeys(tasks, released)
    deployer.fail_delete = {"4102"}
    reaper = Reaper(ledger=ledger, deployer=deployer, clock=clock, events=agent.events,
                    concurrency=3)  # fmt: skip
    await clock.advance_to(clock.now() + timedelta(hours=2))
    reaping = asyncio.create_task(reaper.reap_due())
    try:
        async with asyncio.timeout(30):
            await wait_for_all(events, tasks, {Phase.EXPIRING})
        assert len(deployer.live) == 3  # every deletion still held: they run side by side
        released.set()
        with pytest.raises(DeployError, match="could not delete"):
            await reaping
        phases = {t: (await ledger.get(VisRequest(t).key)).phase for t in sorted(tasks)}
        # The failed one stays expiring: the reconciler finishes it (Reaper.finish).
        assert phases == {"4101": Phase.EXPIRED, "4102": Phase.EXPIRING, "4103": Phase.EXPIRED}
        assert set(deployer.deletes) == {VisRequest(t).key.name for t in ("4101", "4103")}
    finally:
        reaping.cancel()
        await ledger.close()


async def test_schedule_survives_a_restart(ledger, deployer, tmp_path):
    clock = ManualClock()
    first = make_agent(ledger, deployer, clock=clock)
    events = first.events.subscribe()
    await first.start()
    req = VisRequest("5005", source="archive.tgz", ttl=timedelta(hours=24))
    await first.submit(req)
    async with asyncio.timeout(30):
        ready = await wait_for_phase(first, events, "5005", READY_OR_FAILED)
    await first.stop()
    await ledger.close()

    ledger2 = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    second = make_agent(ledger2, deployer, clock=clock)
    events2 = second.events.subscribe()
    report = await second.start()
    try:
        assert report.adopted == [ready.name]
        assert deployer.deploys == [ready.name]  # adopted, not started again
        assert ready.expires_at is not None
        await clock.advance_to(ready.expires_at + timedelta(seconds=3))
        async with asyncio.timeout(30):
            await wait_for_phase(second, events2, "5005", {Phase.EXPIRED})
        expiring = next(e for e in await ledger2.history(req.key) if e.phase is Phase.EXPIRING)
        assert timedelta(0) <= expiring.at - ready.expires_at <= timedelta(seconds=5)
    finally:
        await second.stop()
        await ledger2.close()


async def test_reconcile_removes_orphans_and_restarts_missing_uis(ledger, deployer, tmp_path):
    first = make_agent(ledger, deployer)
    events = first.events.subscribe()
    await first.start()
    req = VisRequest("6006", source="archive.tgz", ttl=timedelta(hours=24))
    await first.submit(req)
    async with asyncio.timeout(30):
        ready = await wait_for_phase(first, events, "6006", READY_OR_FAILED)
    await first.stop()
    # While the agent is down its UI dies, and a stranger's UI appears under our label.
    del deployer.live[ready.name]
    deployer.live["mlflow-orphan-deadbeef"] = {"pid": 99}

    second = make_agent(ledger, deployer)
    events2 = second.events.subscribe()
    report = await second.start()
    try:
        assert report.removed_orphans == ["mlflow-orphan-deadbeef"]
        assert report.restarted == [ready.name]
        async with asyncio.timeout(30):
            again = await wait_for_phase(second, events2, "6006", READY_OR_FAILED)
        assert again.phase is Phase.READY
        assert again.expires_at == ready.expires_at  # a restart never extends the TTL
        assert set(deployer.live) == {ready.name}
        assert len(await ledger.list()) == 1
    finally:
        await second.stop()
        await ledger.close()


async def test_crash_mid_pipeline_is_driven_again_exactly_once(ledger, deployer):
    await ledger.open()
    agent0 = make_agent(ledger, deployer)
    req = VisRequest("7007", source="archive.tgz")
    inst, _ = await agent0.submit(req)
    now = agent0.clock.now()
    claimed = await ledger.claim(now, "crashed-agent")
    assert claimed is not None
    await ledger.transition(req.key, Phase.STAGING, now)
    await ledger.transition(req.key, Phase.DEPLOYING, now)
    await deployer.deploy(claimed, None)  # the crash left a half-started UI behind

    agent = make_agent(ledger, deployer)
    events = agent.events.subscribe()
    report = await agent.start()
    try:
        assert report.restarted == [inst.name]
        async with asyncio.timeout(30):
            ready = await wait_for_phase(agent, events, "7007", READY_OR_FAILED)
        assert ready.phase is Phase.READY
        assert list(deployer.live) == [inst.name]
        assert len(await ledger.list()) == 1
    finally:
        await agent.stop()
        await ledger.close()


async def test_ttl_over_the_maximum_is_refused(ledger, deployer):
    agent = make_agent(ledger, deployer, max_ttl=timedelta(days=1))
    await ledger.open()
    try:
        with pytest.raises(Exception, match="over the maximum"):
            await agent.submit(VisRequest("8008", source="x", ttl=timedelta(days=2)))
        assert await ledger.list() == []
    finally:
        await ledger.close()


async def test_end_keeps_a_live_ttl_and_stops_what_never_became_ready(ledger, deployer):
    """A TeardownWork's end: at the expiry if that is later, now if there is no expiry yet."""
    agent = make_agent(ledger, deployer)
    events = agent.events.subscribe()
    await agent.start()
    try:
        live = VisRequest("3003", source="archive.tgz", ttl=timedelta(hours=1))
        await agent.submit(live)
        async with asyncio.timeout(30):
            ready = await wait_for_phase(agent, events, "3003", READY_OR_FAILED)
        assert ready.phase is Phase.READY, ready.reason
        kept = await agent.end(live.key)
        assert (kept.phase, kept.expires_at) == (Phase.READY, ready.expires_at)
        assert ready.name in deployer.live

        deployer.hold["3004"] = asyncio.Event()
        stuck = VisRequest("3004", source="archive.tgz")
        await agent.submit(stuck)
        async with asyncio.timeout(30):
            await wait_for_phase(agent, events, "3004", {Phase.STARTING})
        await agent.end(stuck.key)
        deployer.hold["3004"].set()
        async with asyncio.timeout(30):
            ended = await wait_for_phase(agent, events, "3004", {Phase.EXPIRED})
        assert ended.name not in deployer.live
        again = await agent.end(stuck.key)
        assert again.phase is Phase.EXPIRED
        with pytest.raises(NotFound):
            await agent.end(VisRequest("no-such-task").key)
    finally:
        await agent.stop()
        await ledger.close()


async def test_a_ui_deployed_while_reconcile_lists_is_not_an_orphan(ledger, deployer):
    """Reconcile reads the ledger, then lists the UIs: a request recorded and deployed in
    between must survive, while a UI with no record at all is still removed."""
    agent = make_agent(ledger, deployer)
    await ledger.open()
    deployer.live["mlflow-stray-00000000"] = {"pid": 0}  # a UI nobody asked for
    listed = deployer.running

    async def running_while_a_request_lands():  # type: ignore[no-untyped-def]
        await ledger.submit(VisRequest("4004", source="archive.tgz"), agent.clock.now())
        inst = await ledger.claim(agent.clock.now(), "a worker")  # what a pipeline does first
        assert inst is not None
        await deployer.deploy(inst, None)
        return await listed()

    deployer.running = running_while_a_request_lands  # type: ignore[method-assign]
    try:
        report = await agent.reconciler.reconcile(startup=False)
        assert report.removed_orphans == ["mlflow-stray-00000000"]
        assert VisRequest("4004").key.name in deployer.live
    finally:
        await ledger.close()


async def test_a_launch_wakes_the_reaper_only_if_its_expiry_comes_before_the_next_look(deployer):
    clock = ManualClock()
    looked = asyncio.Event()

    class NothingDue:
        async def due(self, now):
            return []

        async def next_expiry(self):
            looked.set()
            return None

    reaper = Reaper(ledger=NothingDue(), deployer=deployer, clock=clock, events=EventBus(),
                    max_wait=3600)  # fmt: skip
    running = asyncio.create_task(reaper.run())
    try:
        async with asyncio.timeout(30):
            await looked.wait()  # run() sets its next look before it yields again
        reaper.wake(clock.now() + timedelta(days=1))  # a launch: expires long after the look
        assert not reaper._wake.is_set()
        reaper.wake(clock.now() + timedelta(seconds=1))  # due before the look in an hour
        assert reaper._wake.is_set()
        looked.clear()
        async with asyncio.timeout(30):
            await looked.wait()  # it looked again at once
        assert not reaper._wake.is_set()
        reaper.wake()  # no expiry given (a teardown, a failure): always looks
        assert reaper._wake.is_set()
    finally:
        running.cancel()


def count_claims(ledger: SqlLedger, first: int) -> tuple[list[str | None], asyncio.Event]:
    """Every claim the workers make, as the task it took (None: it found nothing), and an
    event set once ``first`` claims were made."""
    claims: list[str | None] = []
    made = asyncio.Event()
    real = ledger.claim

    async def claim(now, claimant):
        inst = await real(now, claimant)
        claims.append(inst.task_id if inst else None)
        if len(claims) >= first:
            made.set()
        return inst

    ledger.claim = claim  # type: ignore[method-assign]
    return claims, made


async def test_each_request_wakes_one_idle_worker_and_costs_one_claim(ledger, deployer):
    agent = make_agent(ledger, deployer, workers=3)
    agent.poll_interval = 3600  # no poll in this test: every claim after the first is woken
    claims, looked = count_claims(ledger, first=3)
    events = agent.events.subscribe()
    await agent.start()
    try:
        async with asyncio.timeout(30):
            await looked.wait()  # each worker's first look, at start, found nothing
        for n in range(4):
            await agent.submit(VisRequest(f"20{n}", source="archive.tgz"))
            async with asyncio.timeout(30):
                ready = await wait_for_phase(agent, events, f"20{n}", READY_OR_FAILED)
            assert ready.phase is Phase.READY, ready.reason
        # Three empty first looks at start, then one claim per request: no worker woke for
        # nothing (with an Event, all three did for each request).
        assert claims == [None] * 3 + ["200", "201", "202", "203"]
    finally:
        await agent.stop()
        await ledger.close()


async def test_a_backlog_from_before_the_start_is_drained_without_waiting_for_a_poll(
    ledger, deployer
):
    await ledger.open()
    now = SystemClock().now()
    backlog = {f"30{n}" for n in range(5)}
    for task in sorted(backlog):
        await ledger.submit(VisRequest(task, source="archive.tgz"), now)
    agent = make_agent(ledger, deployer, workers=2)
    agent.poll_interval = 3600  # a poll would come only after the test's timeout
    events = agent.events.subscribe()
    await agent.start()
    try:
        async with asyncio.timeout(30):
            done = await wait_for_all(events, backlog, READY_OR_FAILED)
        assert {i.phase for i in done.values()} == {Phase.READY}
    finally:
        await agent.stop()
        await ledger.close()
