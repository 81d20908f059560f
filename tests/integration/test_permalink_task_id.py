"""Issue 19: the permalink also finds a record by task id. A UI started from the CLI has no task
name; its ``/t/5151/mlflow`` said "Not started yet", started again and showed "Cannot start a
visualization". Now a name of digits only that no record carries is looked up as a task id,
with the same access check before the redirect, on the page and in its stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, site
from tests.oidc_issuer import Issuer, running_issuer
from tests.security.test_access_live_progress import first

BY_ID = "/t/5151/mlflow"  # John's task user.jsmith.gan/


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def test_a_cli_made_ui_is_found_by_its_task_id(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer) as web:
        inst, created = await web.agent.submit(VisRequest("5151", source="file:///outputs/5151"))
        assert created and inst.task_name is None  # as the CLI makes it
        inst = await web.until("5151", {Phase.READY})
        assert inst.url is not None and inst.path_token is not None
        john, jane = web.as_user(JOHN), web.as_user(JANE)

        async with web.http.get(BY_ID, headers=john, allow_redirects=False) as resp:
            assert (resp.status, resp.headers.get("Location")) == (302, inst.url)
        async with web.http.get(BY_ID + "/events", headers=john) as resp:
            _, state = await first(resp, "state")
        assert (state["phase"], state["url"]) == ("ready", inst.url)

        # The access check still applies: not John's colleague's to see.
        async with web.http.get(BY_ID, headers=jane, allow_redirects=False) as resp:
            html = await resp.text()
        assert resp.status == 403 and inst.path_token not in html
        assert "Cannot start" not in html and "The MLflow UI is live" in html
        # Nothing was started again, and a task id nobody asked for still offers a start.
        assert [i.key for i in await web.agent.ledger.list()] == [inst.key]
        async with web.http.get("/t/5152/mlflow", headers=john) as resp:
            assert resp.status == 200 and "Not started yet" in await resp.text()
