"""Stand-ins for the adapters, for agent tests that are about the agent's own logic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.service import Agent
from idds_vis.domain.errors import DeployError, NoMlflowData
from idds_vis.domain.models import Deployment, Instance, RunningUI, StagedArtefacts
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger


class ManualClock:
    """A clock the test moves; sleepers wake when it has moved far enough."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        target = self.t + timedelta(seconds=seconds)
        async with self._moved:
            await self._moved.wait_for(lambda: self.t >= target)

    async def advance_to(self, when: datetime) -> None:
        self.t = max(self.t, when)
        async with self._moved:
            self._moved.notify_all()


class FakeStager:
    def __init__(self) -> None:
        self.staged: list[str] = []

    async def stage(self, source: str, dest: Path) -> StagedArtefacts:
        await asyncio.sleep(0)
        if source.startswith("bad:"):
            raise NoMlflowData(f"no MLflow data in {source}")
        dest.mkdir(parents=True, exist_ok=True)
        self.staged.append(source)
        return StagedArtefacts(str(dest), "sqlite", str(dest / "mlflow.db"), ("exp",), 1, 10)


class FakeDeployer:
    """Keeps 'running' UIs in a dict that outlives an agent, like real processes do."""

    name = "fake"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.live: dict[str, dict[str, int]] = {}
        self.deploys: list[str] = []
        self.deletes: list[str] = []
        self.fail_start: set[str] = set()
        self.expiries: dict[str, datetime | None] = {}
        # task id -> event: wait_started blocks until it is set (an instance held in `starting`)
        self.hold: dict[str, asyncio.Event] = {}
        # The same for delete (an instance held in `expiring`), and deletes that fail.
        self.hold_delete: dict[str, asyncio.Event] = {}
        self.fail_delete: set[str] = set()

    def staging_dir(self, instance: Instance) -> Path | None:
        return self.root / instance.name

    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        await asyncio.sleep(0)
        if instance.name not in self.live:
            self.deploys.append(instance.name)
            self.live[instance.name] = {"pid": len(self.deploys)}
        url = f"http://ui.example{instance.prefix}/"
        return Deployment(url=url, health_url=url + "health", handle=self.live[instance.name])

    async def wait_started(
        self, instance: Instance, deployment: Deployment, timeout: float
    ) -> None:
        await asyncio.sleep(0)
        if instance.task_id in self.hold:
            await self.hold[instance.task_id].wait()
        if instance.task_id in self.fail_start:
            raise DeployError("the MLflow UI exited while starting (code 1): boom")

    async def record_expiry(self, instance: Instance) -> None:
        self.expiries[instance.name] = instance.expires_at

    async def roll_to_current(self, ui: RunningUI) -> bool:
        return False

    async def delete(self, instance: Instance) -> None:
        if instance.task_id in self.hold_delete:
            await self.hold_delete[instance.task_id].wait()
        if instance.task_id in self.fail_delete:
            raise DeployError(f"could not delete {instance.name}: boom")
        await self.delete_by_name(instance.name)

    async def delete_by_name(self, name: str) -> None:
        await asyncio.sleep(0)
        if self.live.pop(name, None) is not None:
            self.deletes.append(name)

    async def running(self) -> list[RunningUI]:
        return [RunningUI(name, dict(handle)) for name, handle in self.live.items()]


class FakeProbe:
    async def verify(self, deployment: Deployment, experiments: tuple[str, ...]) -> None:
        await asyncio.sleep(0)


def make_agent(ledger: SqlLedger, deployer: FakeDeployer, stager: FakeStager | None = None,
               clock: ManualClock | None = None, **kwargs: object) -> Agent:  # fmt: skip
    return Agent(
        ledger=ledger,
        stager=stager or FakeStager(),
        deployer=deployer,
        probe=FakeProbe(),
        clock=clock or SystemClock(),
        poll_interval=0.05,
        **kwargs,  # type: ignore[arg-type]
    )


async def wait_for_phase(agent: Agent, queue: asyncio.Queue[Instance], task_id: str,
                         phases: set[Phase]) -> Instance:  # fmt: skip
    """Wait on the agent's own events (no polling, no sleeps); the ledger is then checked."""
    while True:
        inst = await queue.get()
        if inst.task_id == task_id and inst.phase in phases:
            return inst


async def wait_for_all(queue: asyncio.Queue[Instance], task_ids: set[str],
                       phases: set[Phase]) -> dict[str, Instance]:  # fmt: skip
    """Like wait_for_phase for several tasks at once, dropping no task's events."""
    seen: dict[str, Instance] = {}
    while set(seen) != task_ids:
        inst = await queue.get()
        if inst.task_id in task_ids and inst.phase in phases:
            seen[inst.task_id] = inst
    return seen
