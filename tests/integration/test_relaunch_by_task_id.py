"""Issue 19: a record without a task name (made by the CLI, by task id) can be relaunched from
the catalog and started from ``/t/<task id>/<tool>``. Before, the guarded relaunch looked records
up by name only (the catalog hid its Relaunch button for them), and a start at ``/t/5152/mlflow``
asked PanDA for a task *named* 5152 and answered 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from idds_vis.agent.panda_tasks import PandaArtefacts, PandaStarter
from idds_vis.domain.errors import NotFound
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.catalog_support import JANE, JOHN, site
from tests.fakes import FakeDeployer, make_agent
from tests.oidc_issuer import Issuer, running_issuer
from tests.unit.test_panda_tasks import Panda


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def test_relaunch_and_start_by_task_id_behind_login(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer) as web:
        john, jane = web.as_user(JOHN), web.as_user(JANE)
        inst, _ = await web.agent.submit(VisRequest("5151", source="file:///outputs/5151"))
        assert inst.task_name is None  # as the CLI makes it
        await web.until("5151", {Phase.READY})
        await web.agent.teardown(inst.key)
        ended = await web.until("5151", {Phase.EXPIRED})

        # Not Jane's task: the access check applies to a record found by its id too.
        async with web.http.post("/t/5151/mlflow/relaunch", headers=jane,
                                 allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 403
        async with web.http.post("/t/5151/mlflow/relaunch", headers=john,
                                 allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303 and resp.headers["Location"].endswith("/t/5151/mlflow")
        again = await web.until("5151", {Phase.READY})
        assert again.attempt == ended.attempt + 1 and again.task_name is None
        trail = [(a.actor, a.action) for a in await web.agent.ledger.actions(inst.key)]
        assert trail[-1][0] == JOHN, trail  # the audit trail names the person

        # A start at /t/<task id>/<tool> with no record: PanDA's task of that id, which keeps
        # PanDA's name for it (not "5152").
        async with web.http.post("/t/5152/mlflow/start", headers=john,
                                 allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303, await resp.text()
        started = await web.agent.ledger.get(InstanceKey("5152"))
        assert started is not None and started.task_name == "user.jsmith.vae/"
        # A number PanDA knows neither as a name nor as an id is still refused.
        async with web.http.post("/t/9999/mlflow/start", headers=john) as resp:
            assert resp.status == 404


async def test_the_panda_starter_takes_a_task_id(tmp_path: Path) -> None:
    panda = Panda()
    panda.add(4711, "done", name="user.jdoe.train/")
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    starter = PandaStarter(make_agent(ledger, FakeDeployer(tmp_path / "ui")), PandaArtefacts(panda))
    try:
        inst = await starter.start("4711", "mlflow", None, None)
        assert (inst.task_id, inst.task_name) == ("4711", "user.jdoe.train/")
        with pytest.raises(NotFound, match="PanDA has no task 4712"):
            await starter.start("4712", "mlflow", None, None)
    finally:
        await ledger.close()
