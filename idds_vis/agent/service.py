"""The agent process: reconcile at start, then pipeline workers, reaper and periodic reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from datetime import timedelta

from idds_vis.agent.actor import current_actor
from idds_vis.agent.events import EventBus
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.agent.pipeline import Pipeline, SourceResolver
from idds_vis.agent.reaper import Reaper
from idds_vis.agent.reconciler import Reconciler, ReconcileReport
from idds_vis.agent.replicas import Coordination, Replica, keep_running
from idds_vis.agent.wakeup import Wake, WorkSignal
from idds_vis.domain.errors import InvalidRequest, NotFound
from idds_vis.domain.expiry import check_ttl, format_duration
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import LIVE, TERMINAL, Phase
from idds_vis.ports import Clock, Deployer, Ledger, ReadinessProbe, Recorder, Stager
from idds_vis.ports.ledger import AccessLedger

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        *,
        ledger: Ledger,
        stager: Stager,
        deployer: Deployer,
        probe: ReadinessProbe,
        clock: Clock,
        recorders: Sequence[Recorder] = (),
        workers: int = 4,
        poll_interval: float = 0.5,
        reconcile_interval: float = 60.0,
        start_timeout: float = 180.0,
        max_ttl: timedelta | None = None,
        agent_id: str | None = None,
        metrics: AgentMetrics | None = None,
        source_resolver: SourceResolver | None = None,
        metrics_interval: float = 30.0,
        coordination: Coordination | None = None,
    ) -> None:
        self.ledger = ledger
        self.deployer = deployer
        self.clock = clock
        self.events = EventBus()
        self.workers = workers
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        self.max_ttl = max_ttl
        self.agent_id = agent_id or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics or AgentMetrics()
        self.metrics_interval = metrics_interval
        self.pipeline = Pipeline(
            ledger=ledger,
            stager=stager,
            deployer=deployer,
            probe=probe,
            clock=clock,
            events=self.events,
            recorders=recorders,
            start_timeout=start_timeout,
            metrics=self.metrics,
            source_resolver=source_resolver,
        )
        self.reaper = Reaper(
            ledger=ledger,
            deployer=deployer,
            clock=clock,
            events=self.events,
            recorders=recorders,
            metrics=self.metrics,
        )
        self.reconciler = Reconciler(
            ledger=ledger, deployer=deployer, reaper=self.reaper, clock=clock, events=self.events
        )
        self._work = WorkSignal()
        self._tasks: list[asyncio.Task[None]] = []
        # Several replicas on one ledger (idds_vis/agent/replicas.py); None: a lone agent.
        self.replica: Replica | None = None
        if coordination is not None:
            self.replica = Replica(coordination, agent_id=self.agent_id, clock=clock,
                                   deployer=deployer, events=self.events,
                                   registry=self.metrics.registry)  # fmt: skip

    # -- requests ---------------------------------------------------------------------------
    async def submit(self, request: VisRequest) -> tuple[Instance, bool]:
        """Record the request durably (idempotent by task and tool) and wake a worker."""
        check_ttl(request.ttl, self.max_ttl)
        # The audit row (who started it) goes in with the record, in one commit.
        audited = isinstance(self.ledger, AccessLedger)
        actor = (current_actor() or request.origin) if audited else None
        who = f"for {request.requested_by}" if request.requested_by else None
        inst, created = await self.ledger.submit(request, self.clock.now(), actor=actor,
                                                 detail=who)  # fmt: skip
        if created:
            self.notify(inst)
        return inst, created

    def notify(self, inst: Instance) -> None:
        """A record was started outside ``submit`` (the quota queue): tell watchers and wake a
        worker rather than leave it to the next poll."""
        self.events.publish(inst)
        self._work.notify(inst.key)

    async def extend(self, key: InstanceKey, by: timedelta) -> Instance:
        inst = await self._get(key)
        if inst.expires_at is None or inst.phase in TERMINAL:
            raise InvalidRequest(
                f"{inst.name} is {inst.phase.value}: only a live UI can be extended"
            )
        new_expiry = max(inst.expires_at, self.clock.now()) + by
        if self.max_ttl is not None and new_expiry - self.clock.now() > self.max_ttl:
            raise InvalidRequest("extending that far goes over the maximum TTL")
        inst = await self.ledger.set_expiry(key, new_expiry, self.clock.now())
        await self.deployer.record_expiry(inst)
        self.reaper.wake(inst.expires_at)
        await self._record("extend", inst, detail=f"by {format_duration(by)} to {new_expiry}")
        return inst

    async def teardown(self, key: InstanceKey) -> Instance:
        """Teardown is an expiry set to now: one durable mechanism for both."""
        inst = await self._get(key)
        if inst.phase in TERMINAL:
            return inst
        inst = await self.ledger.set_expiry(key, self.clock.now(), self.clock.now())
        self.reaper.wake()
        await self._record("stop", inst)
        return inst

    async def end(self, key: InstanceKey) -> Instance:
        """End the instance now, or leave it to the reaper if its expiry is later (TeardownWork).

        A workflow's teardown step must not cut short the TTL its author asked for, but it must
        stop an instance that never became ready (its expiry is not set yet).
        """
        inst = await self._get(key)
        if inst.phase in TERMINAL:
            return inst
        if inst.expires_at is not None and inst.expires_at > self.clock.now():
            return inst
        return await self.teardown(key)

    async def relaunch(self, key: InstanceKey) -> Instance:
        """Start an expired or failed visualization again (attempt + 1) and wake a worker."""
        inst = await self.ledger.relaunch(key, self.clock.now())
        self.notify(inst)
        await self._record("relaunch", inst)
        return inst

    async def _record(
        self, action: str, inst: Instance, fallback: str = "system", detail: str | None = None
    ) -> None:
        """The audit trail: who (the signed-in person the web app serves, else the request's
        origin) did what to which visualization. A ledger without one records nothing."""
        if isinstance(self.ledger, AccessLedger):
            actor = current_actor() or fallback
            await self.ledger.record_action(actor, action, inst.key, self.clock.now(),
                                            attempt=inst.attempt, detail=detail)  # fmt: skip

    async def _get(self, key: InstanceKey) -> Instance:
        inst = await self.ledger.get(key)
        if inst is None:
            raise NotFound(f"no visualization for task {key.task_id} ({key.tool})")
        return inst

    # -- running ----------------------------------------------------------------------------
    async def start(self) -> ReconcileReport:
        await self.ledger.open()
        if self.replica is not None:
            # One of several replicas: the workers run while its membership lease holds; the
            # reconcile (then periodic), the reaper, and re-driving what a stopped replica
            # left mid-pipeline run on the leader-lease holder alone.
            report = ReconcileReport()
            if await self.replica.leader.try_once():
                # Leading from the start (a lone agent, or the first replica): reconcile now,
                # as a lone agent always did, so the caller gets the report. (The lead then
                # reconciles once more: idempotent.)
                await self.replica.recover_stopped()
                report = await self.reconciler.reconcile(startup=False)
                log.info("start-up reconcile: %s", _counts(report))
            work = asyncio.create_task(self.replica.run(self._run_workers, self._lead))
            self._tasks = [work, asyncio.create_task(self._metrics_loop())]
            return report
        report = await self.reconciler.reconcile(startup=True)
        log.info("start-up reconcile: %s", _counts(report))
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]
        self._tasks.append(asyncio.create_task(self.reaper.run()))
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))
        self._tasks.append(asyncio.create_task(self._metrics_loop()))
        return report

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        close = getattr(self.deployer, "close", None)  # the local warm pool (issue 18)
        if close is not None:
            await close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _run_workers(self) -> None:
        async with asyncio.TaskGroup() as group:
            for i in range(self.workers):
                group.create_task(self._worker(i))

    async def _lead(self) -> None:
        # Not startup=True: requests other replicas have in flight are theirs (a stopped
        # replica's are re-driven by the Replica's recovery instead).
        report = await self.reconciler.reconcile(startup=False)
        log.info("reconcile on taking the lead: %s", _counts(report))
        async with asyncio.TaskGroup() as group:
            group.create_task(keep_running(self.reaper.run, "the reaper", self.clock))
            group.create_task(self._reconcile_loop())

    async def _worker(self, index: int) -> None:
        claimant = f"{self.agent_id}/{index}"
        wake: Wake | None = None  # the first look is unprompted: there may be requests from before
        while True:
            inst = await self.ledger.claim(self.clock.now(), claimant)
            if inst is not None:
                self.events.publish(inst)
                if wake is None or wake.key != inst.key:
                    self._work.notify()  # not what this worker was woken for: more may wait
                done = await self.pipeline.run(inst)
                self.reaper.wake(done.expires_at if done.phase is Phase.READY else None)
            wake = await self._work.wait(self.poll_interval)

    async def _reconcile_loop(self) -> None:
        while True:
            await self.clock.sleep(self.reconcile_interval)
            try:
                await self.reconciler.reconcile(startup=False)
            except Exception:
                log.exception("periodic reconcile failed; trying again later")

    async def _metrics_loop(self) -> None:
        """Live instances come from the ledger, which every replica shares, not from events."""
        while True:
            try:
                self.metrics.count_live(await self.ledger.list(LIVE))
            except Exception:
                log.exception("counting live instances failed; trying again later")
            await self.clock.sleep(self.metrics_interval)


def _counts(report: ReconcileReport) -> str:
    """``adopted 2, restarted 0, ...``: counts, not the names (they run to thousands), and no
    Python repr in the log line."""
    return ", ".join(
        f"{what.replace('_', ' ')} {len(names)}" for what, names in vars(report).items()
    )
