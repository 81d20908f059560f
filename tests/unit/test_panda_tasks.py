"""PandaArtefacts and PandaStarter against a PanDA stand-in: the refusals and the sources."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from idds_vis.agent.panda_tasks import PandaArtefacts, PandaStarter
from idds_vis.domain.errors import InvalidRequest, NoMlflowData, NotFound
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.ports.tasks import PandaTask
from tests.fakes import FakeDeployer, make_agent

OUT = "user.jdoe.train.out/"
LOG = "user.jdoe.train.log/"


class Panda:
    def __init__(self) -> None:
        self.tasks: dict[int, PandaTask] = {}
        self.files: dict[int, list[dict[str, Any]]] = {}
        self.names: dict[tuple[str, str | None], int] = {}

    def add(self, task_id: int, status: str | None, containers: tuple[str, ...] = (OUT, LOG),
            name: str | None = None, owner: str = "Joe Doe") -> None:  # fmt: skip
        name = name or f"user.jdoe.t{task_id}/"
        self.tasks[task_id] = PandaTask(task_id, name, status, owner, {}, containers)
        self.names[(name, owner)] = task_id

    async def task(self, task_id: int, *, details: bool = False) -> PandaTask | None:
        return self.tasks.get(task_id)

    async def task_id_by_name(self, task_name: str, user_name: str | None = None) -> int | None:
        return self.names.get((task_name, user_name))

    async def output_files(self, task_id: int) -> list[dict[str, Any]]:
        return self.files.get(task_id, [])


@pytest.fixture
def panda() -> Panda:
    panda = Panda()
    panda.add(1, "done", name="user.jdoe.train/")
    panda.add(2, "running")
    panda.add(3, "finished", containers=(LOG,), name="user.jdoe.logs-only/")
    panda.add(4, "done", name="user.jdoe.other/")
    return panda


async def test_refusals_say_what_is_wrong(panda: Panda) -> None:
    artefacts = PandaArtefacts(panda)
    with pytest.raises(NotFound, match="PanDA has no task 9"):
        await artefacts.finished_task(9)
    with pytest.raises(InvalidRequest, match="task 2 is running: its results can be shown once"):
        await artefacts.finished_task(2)
    with pytest.raises(InvalidRequest, match="task 3 has no outputs"):
        await artefacts.finished_task(3)
    assert (await artefacts.finished_task(1)).task_id == 1


async def test_where_the_artefacts_are(panda: Panda) -> None:
    done = panda.tasks[1]
    assert await PandaArtefacts(panda).source_for(done) == "rucio://user.jdoe:user.jdoe.train.out"
    bigpanda = PandaArtefacts(
        panda, task_source="https://bp/idds/downloadhpometrics/?workloadid={task_id}"
    )
    assert await bigpanda.source_for(done) == "https://bp/idds/downloadhpometrics/?workloadid=1"
    s3 = PandaArtefacts(panda, outputs_source="s3://grid/{scope}/{container}/")
    assert await s3.source_for(done) == "s3://grid/user.jdoe/user.jdoe.train.out/"
    panda.files[1] = [
        {"lfn": "user.jdoe.1._000002.log.tgz", "scope": "user.jdoe", "dataset": LOG, "type": "log"},
        {"lfn": "user.jdoe.1._000001.summary.txt", "scope": "user.jdoe", "dataset": OUT},
        {"lfn": "user.jdoe.1._000001.model.tgz", "scope": "user.jdoe", "dataset": OUT},
        {"lfn": "user.jdoe.1._000001.mlruns.tgz", "scope": "user.jdoe", "dataset": OUT},
    ]
    per_file = PandaArtefacts(panda, outputs_source="https://files/{scope}/{lfn}")
    assert (
        await per_file.source_for(done) == "https://files/user.jdoe/user.jdoe.1._000001.mlruns.tgz"
    )
    panda.files[1] = [
        {"lfn": "user.jdoe.1._000001.summary.txt", "scope": "user.jdoe", "dataset": OUT}
    ]
    with pytest.raises(NoMlflowData, match="no MLflow data in the outputs of task 1"):
        await per_file.source_for(done)


async def test_the_permalink_start_checks_then_submits_once(panda: Panda, tmp_path: Path) -> None:
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    agent = make_agent(ledger, FakeDeployer(tmp_path / "ui"))
    starter = PandaStarter(agent, PandaArtefacts(panda))
    try:
        with pytest.raises(NotFound, match=r"no task of Joe Doe named 'user\.jdoe\.nope/'"):
            await starter.start("user.jdoe.nope/", "mlflow", None, None, owner="Joe Doe")
        with pytest.raises(NotFound, match="no task named"):
            await starter.start("user.jdoe.train/", "mlflow", None, None)  # no owner: not found
        panda.add(5, "running", name="user.jdoe.slow/")
        with pytest.raises(InvalidRequest, match="task 5 is running"):
            await starter.start("user.jdoe.slow/", "mlflow", None, None, owner="Joe Doe")
        assert await ledger.list() == []  # a refusal records nothing
        first = await starter.start("user.jdoe.train/", "mlflow", timedelta(hours=2), None,
                                    owner="Joe Doe")  # fmt: skip
        again = await starter.start("user.jdoe.train/", "mlflow", None, None, owner="Joe Doe")
        assert first.key == again.key and first.task_id == "1"
        assert (first.task_name, first.source, first.phase) == (
            "user.jdoe.train/",
            None,
            Phase.REQUESTED,
        )
        assert first.ttl == timedelta(hours=2) and first.requested_by == "Joe Doe"
    finally:
        await ledger.close()
