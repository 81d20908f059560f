"""Leases and claims of several agent replicas, on SQLite and PostgreSQL.

Time is a ManualClock wherever the logic reads a clock, so "after the lease lapsed" is a step
the test takes, not a wait; only the race tests use the database's own clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from idds_vis.agent.leases import LeaseKeeper
from idds_vis.agent.replicas import LEADER_LEASE, MEMBER_PREFIX, Coordination
from idds_vis.agent.service import Agent
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.ledger.leases import SqlClaims, SqlLeases
from idds_vis.ui import stub
from tests.fakes import FakeDeployer, ManualClock, make_agent

HANG_GUARD = 30.0  # seconds; reached only when something is broken


async def until(condition: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll a condition the code under test brings about, under a hang guard."""
    async with asyncio.timeout(HANG_GUARD):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.01)


def later(clock: ManualClock, seconds: float) -> Awaitable[None]:
    return clock.advance_to(clock.now() + timedelta(seconds=seconds))


# -- the lease table -------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_it_lapses_or_is_released(ledger: SqlLedger) -> None:
    clock = ManualClock()
    leases = SqlLeases(ledger.engine, clock)
    assert await leases.try_acquire("lead", "a", 15)
    assert not await leases.try_acquire("lead", "b", 15)
    await later(clock, 10)
    assert await leases.try_acquire("lead", "a", 15)  # renewed: good for 15 s from now
    await later(clock, 10)
    assert not await leases.try_acquire("lead", "b", 15)
    assert await leases.holder("lead") == "a"
    await later(clock, 6)  # 16 s after the last renewal: lapsed
    assert await leases.holder("lead") is None
    assert await leases.try_acquire("lead", "b", 15)
    assert not await leases.try_acquire("lead", "a", 15)
    await leases.release("lead", "a")  # not the holder: changes nothing
    assert await leases.holder("lead") == "b"
    await leases.release("lead", "b")
    assert await leases.try_acquire("lead", "a", 15)  # at once, no waiting out the ttl


async def test_live_holders_and_pruning_see_only_their_prefix(ledger: SqlLedger) -> None:
    clock = ManualClock()
    leases = SqlLeases(ledger.engine, clock)
    for holder in ("x", "y", "z"):
        assert await leases.try_acquire(f"agent/{holder}", holder, 15)
    assert await leases.try_acquire("leader", "x", 15)
    await leases.release("agent/z", "z")
    assert await leases.live_holders("agent/") == {"x", "y"}
    await later(clock, 10)
    assert await leases.try_acquire("agent/x", "x", 15)
    await later(clock, 10)  # y lapsed 5 s ago, x renewed 10 s ago
    assert await leases.live_holders("agent/") == {"x"}
    assert await leases.prune("agent/", lapsed_for=60) == 1  # z, released; y lapsed too lately
    await later(clock, 60)
    assert await leases.prune("agent/", lapsed_for=60) == 1  # y
    assert await leases.holder("leader") is None  # other names are never pruned
    assert await leases.try_acquire("leader", "w", 15)


async def test_racing_replicas_get_one_holder_on_the_database_clock(ledger_url: str) -> None:
    """Eight engines (eight 'processes') race for one lease on the database's clock."""
    engines = [SqlLedger(ledger_url) for _ in range(8)]
    try:
        await engines[0].open()
        stores = [SqlLeases(e.engine) for e in engines]
        won = await asyncio.gather(
            *(s.try_acquire("lead", f"r{i}", 30) for i, s in enumerate(stores))
        )
        assert sum(won) == 1
        winner = f"r{won.index(True)}"
        assert await stores[3].holder("lead") == winner
        # Renewal by the holder while the others keep trying: still one holder, the same one.
        again = await asyncio.gather(
            *(s.try_acquire("lead", f"r{i}", 30) for i, s in enumerate(stores))
        )
        assert [f"r{i}" for i, ok in enumerate(again) if ok] == [winner]
    finally:
        for e in engines:
            await e.close()


@pytest.mark.postgres
async def test_claims_across_processes_give_each_request_to_one_claimant(pg_url: str) -> None:
    """FOR UPDATE SKIP LOCKED over separate connection pools, as separate processes have."""
    ledgers = [SqlLedger(pg_url) for _ in range(6)]
    try:
        await ledgers[0].open()
        now = ManualClock().now()
        for i in range(120):
            await ledgers[0].submit(VisRequest(task_id=f"claim-{i}", source="/d"), now)

        async def drain(index: int) -> list[str]:
            got = []
            while (inst := await ledgers[index].claim(now, f"agent{index}/0")) is not None:
                got.append(inst.task_id)
            return got

        claimed = await asyncio.gather(*(drain(i) for i in range(6)))
        every = [task for batch in claimed for task in batch]
        assert sorted(every) == sorted(f"claim-{i}" for i in range(120))  # once each
        assert sum(1 for batch in claimed if batch) > 1  # really concurrent
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_claim_changes_name_the_claimant_they_expect(ledger: SqlLedger) -> None:
    clock = ManualClock()
    claims = SqlClaims(ledger.engine)
    key = InstanceKey("claimed")
    await ledger.submit(VisRequest(task_id="claimed", source="/d"), clock.now())
    await ledger.claim(clock.now(), "alive:1:aa/0")
    await ledger.transition(key, Phase.STAGING, clock.now())
    [(inst, claimant)] = await claims.in_flight()
    assert (inst.phase, claimant) == (Phase.STAGING, "alive:1:aa/0")
    assert await claims.take_over(key, "other:2:bb/0", "me/recovering", clock.now()) is None
    assert await claims.requeue(key, "me/recovering", "why", clock.now()) is None
    taken = await claims.take_over(key, "alive:1:aa/0", "me/recovering", clock.now())
    assert taken is not None and taken.phase is Phase.STAGING
    requeued = await claims.requeue(key, "me/recovering", "the reason", clock.now())
    assert requeued is not None
    assert (requeued.phase, requeued.reason) == (Phase.REQUESTED, "the reason")
    assert await claims.in_flight() == []
    history = await ledger.history(key)
    assert [e.reason for e in history if e.phase is Phase.REQUESTED] == [None, "the reason"]
    again = await ledger.claim(clock.now(), "me:3:cc/1")  # an ordinary request once more
    assert again is not None and again.task_id == "claimed"


# -- the lease keeper ------------------------------------------------------------------------


class Switchable:
    """A lease store that can be cut off, like a replica losing its database; it counts the
    attempts, so the test knows a keeper has tried before it checks what happened."""

    def __init__(self, store: SqlLeases) -> None:
        self.store = store
        self.cut = False
        self.attempts = 0

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        try:
            if self.cut:
                raise ConnectionError("database unreachable")
            return await self.store.try_acquire(name, holder, ttl)
        finally:
            self.attempts += 1

    async def release(self, name: str, holder: str) -> None:
        if self.cut:
            raise ConnectionError("database unreachable")
        await self.store.release(name, holder)


class SleepCountingClock(ManualClock):
    """Knows how many sleeps are pending, so a test moves time only once all are asleep."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeping += 1
        try:
            await super().sleep(seconds)
        finally:
            self.sleeping -= 1


class Work:
    """What a lease guards: counts its runs and whether one runs now."""

    def __init__(self) -> None:
        self.running = 0
        self.started = 0

    async def __call__(self) -> None:
        self.running += 1
        self.started += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.running -= 1


async def test_the_work_runs_on_one_holder_and_moves_when_it_cannot_renew(
    ledger: SqlLedger,
) -> None:
    clock = SleepCountingClock()
    sa, sb = (Switchable(SqlLeases(ledger.engine, clock)) for _ in range(2))
    a = LeaseKeeper(sa, "lead", "a", clock=clock, ttl=15)
    b = LeaseKeeper(sb, "lead", "b", clock=clock, ttl=15)
    work_a, work_b = Work(), Work()

    async def step(seconds: float) -> None:
        """Move the clock once both keepers sleep, then wait until both have tried again
        and sleep once more."""
        await until(lambda: clock.sleeping == 2)
        before = (sa.attempts, sb.attempts)
        await later(clock, seconds)
        await until(lambda: sa.attempts > before[0] and sb.attempts > before[1])
        await until(lambda: clock.sleeping == 2)

    task_a = asyncio.create_task(a.run(work_a))
    await until(lambda: work_a.running == 1)
    task_b = asyncio.create_task(b.run(work_b))
    try:
        await until(lambda: sb.attempts == 1)
        for _ in range(6):  # t = 5 … 30: a renews, b is refused
            await step(5)
        assert (work_a.running, work_b.started, a.terms, b.terms) == (1, 0, 1, 0)

        sa.cut = True
        await step(5)  # t = 35: a's renewal fails, so its work stops at once
        await until(lambda: work_a.running == 0)
        assert not a.held and work_b.started == 0  # the lease runs until 45: b waits
        await step(5)  # t = 40
        assert work_b.started == 0
        await step(6)  # t = 46: lapsed
        await until(lambda: work_b.running == 1)
        assert work_a.running == 0 and b.held

        sa.cut = False
        await step(5)  # t = 51: a is back, but b holds the lease and renews it
        assert work_a.running == 0 and a.terms == 1
        assert await sb.store.holder("lead") == "b"
    finally:
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)
    assert work_b.running == 0
    # b gave the lease back as it stopped: a takes it at its next try, without waiting it out.
    await until(lambda: clock.sleeping == 1)
    await later(clock, 5)
    await until(lambda: work_a.running == 1)
    task_a.cancel()
    await asyncio.gather(task_a, return_exceptions=True)
    assert work_a.running == 0 and a.terms == 2


# -- replicas of the agent -------------------------------------------------------------------


def coordination(ledger: SqlLedger, clock: ManualClock) -> Coordination:
    leases = SqlLeases(ledger.engine, clock)
    return Coordination(leader=leases, members=leases, claims=SqlClaims(ledger.engine), ttl=15)


def replica(ledger: SqlLedger, deployer: FakeDeployer, clock: ManualClock, name: str) -> Agent:
    return make_agent(ledger, deployer, clock=clock, agent_id=name,
                      coordination=coordination(ledger, clock))  # fmt: skip


async def test_a_stopped_replicas_requests_are_driven_again_by_the_leader(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    clock = ManualClock()
    deployer = FakeDeployer(tmp_path)
    leases = SqlLeases(ledger.engine, clock)
    # Left by replicas: "dead" holds no membership lease any more, "alive" does.
    for task, claimant in (("orphaned", "dead:1:aa/0"), ("kept", "alive:2:bb/0")):
        await ledger.submit(VisRequest(task_id=task, source="/d"), clock.now())
        await ledger.claim(clock.now(), claimant)
        await ledger.transition(InstanceKey(task), Phase.STAGING, clock.now())
    deployer.live[InstanceKey("orphaned").name] = {"pid": 1}  # what the dead one started
    assert await leases.try_acquire(MEMBER_PREFIX + "alive:2:bb", "alive:2:bb", 15)

    agent = replica(ledger, deployer, clock, "c:3:cc")
    await agent.start()
    try:
        await until(lambda: _phase(ledger, "orphaned", Phase.READY))
        assert InstanceKey("orphaned").name in deployer.deletes  # removed before the restart
        history = await ledger.history(InstanceKey("orphaned"))
        assert [e.reason for e in history if e.reason] == [
            "the agent restarted during staging; starting again"
        ]
        kept = await ledger.get(InstanceKey("kept"))
        assert kept is not None and kept.phase is Phase.STAGING  # its replica is alive
        assert await leases.holder(LEADER_LEASE) == "c:3:cc"
        assert agent.replica is not None and agent.replica.member.held
    finally:
        await agent.stop()
    # Stopping gave both leases back.
    assert await leases.holder(LEADER_LEASE) is None
    assert await leases.live_holders(MEMBER_PREFIX) == {"alive:2:bb"}


async def test_the_reaper_runs_on_the_leader_alone_and_moves_when_it_stops(
    ledger_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    deployer = FakeDeployer(tmp_path)
    ledgers = [SqlLedger(ledger_url) for _ in range(2)]
    await ledgers[0].open()
    first, second = (replica(lg, deployer, clock, f"r{i}:1:aa") for i, lg in enumerate(ledgers))
    await first.start()
    await until(lambda: first.replica is not None and first.replica.leader.held)
    await second.start()
    try:
        for task in ("t1", "t2"):
            await first.submit(VisRequest(task_id=task, source="/d", ttl=timedelta(seconds=60)))
        await until(lambda: _all_phase(ledgers[0], {"t1", "t2"}, Phase.READY))
        assert second.replica is not None and not second.replica.leader.held
        await first.stop()  # gives its leases back
        await later(clock, 5)
        await until(lambda: second.replica is not None and second.replica.leader.held)
        await later(clock, 61)  # past both expiries: only the new leader's reaper can end them
        await until(lambda: _all_phase(ledgers[0], {"t1", "t2"}, Phase.EXPIRED))
        assert sorted(deployer.deletes) == sorted(InstanceKey(t).name for t in ("t1", "t2"))
    finally:
        await first.stop()
        await second.stop()
        for lg in ledgers:
            await lg.close()


async def _phase(ledger: SqlLedger, task: str, phase: Phase) -> bool:
    inst = await ledger.get(InstanceKey(task))
    return inst is not None and inst.phase is phase


async def _all_phase(ledger: SqlLedger, tasks: set[str], phase: Phase) -> bool:
    return all([await _phase(ledger, t, phase) for t in tasks])


def test_the_stand_in_ui_reads_the_staged_info_where_staging_writes_it() -> None:
    from idds_vis.staging.info import STAGED_INFO

    assert stub.STAGED_INFO == STAGED_INFO


# -- the Kubernetes Lease --------------------------------------------------------------------


async def test_a_kubernetes_lease_is_judged_on_the_observers_clock(tmp_path: Path) -> None:
    """coordination.k8s.io/v1 Lease on the strict API emulator; each replica's clock is its own
    ManualClock, skewed by an hour, which must not matter."""
    from idds_vis.deploy.kubernetes.client import KubeClient
    from idds_vis.deploy.kubernetes.lease import KubeLeaseStore
    from tests.k8s_emulator import KubeEmulator

    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", "vis"))
        clients = [KubeClient(kubeconfig, call_timeout=5, retry_budget=5) for _ in range(3)]
        clock_a, clock_b, clock_c = ManualClock(), ManualClock(), ManualClock()
        await later(clock_b, 3600)  # b's wall clock is an hour ahead of a's
        a, b, c = (KubeLeaseStore(k, "vis", clock) for k, clock in
                   zip(clients, (clock_a, clock_b, clock_c), strict=True))  # fmt: skip
        try:
            # Racing for a lease nobody made: one create wins, the other gets 409.
            won = await asyncio.gather(
                a.try_acquire("lead", "a", 15), b.try_acquire("lead", "b", 15)
            )
            assert sorted(won) == [False, True]
            holder, other = (a, b) if won[0] else (b, a)
            name = "a" if won[0] else "b"
            rival = "b" if won[0] else "a"
            lease = emu.get("leases", "lead", "vis")
            assert lease is not None and lease["spec"]["holderIdentity"] == name
            assert lease["spec"]["leaseDurationSeconds"] == 15

            assert not await other.try_acquire("lead", rival, 15)  # first seen now
            for _ in range(4):  # the holder renews: the record changes, so it never lapses
                await later(clock_a, 10)
                await later(clock_b, 10)
                assert await holder.try_acquire("lead", name, 15)
                assert not await other.try_acquire("lead", rival, 15)
            await later(clock_a, 16)  # no renewal for 16 s of the rival's own time
            await later(clock_b, 16)
            assert await other.try_acquire("lead", rival, 15)
            lease = emu.get("leases", "lead", "vis")
            assert lease is not None and lease["spec"]["holderIdentity"] == rival
            assert lease["spec"]["leaseTransitions"] == 1
            assert not await holder.try_acquire("lead", name, 15)  # it lost it

            await other.release("lead", rival)
            assert await c.holder("lead") is None
            assert await c.try_acquire("lead", "c", 15)  # a released lease is free at once
        finally:
            for k in clients:
                await k.close()
