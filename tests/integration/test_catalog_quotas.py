"""Quotas through the catalog's API: requests over a limit wait in FIFO order with their queue
position, start as soon as room frees up (also after an agent restart, and when another
replica frees it), and the capacity endpoint reports used and free slots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import Issuer, running_issuer

VIS = "/api/v1/visualizations"


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def post(web: Site, path: str, who: dict[str, str], **body: Any) -> tuple[int, Any]:
    async with web.http.post(path, json=body, headers=who) as resp:
        return resp.status, await resp.json()


async def get(web: Site, path: str, who: dict[str, str]) -> Any:
    async with web.http.get(path, headers=who) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_over_the_limits_requests_queue_in_order_and_start_when_room_frees(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer, quota_per_user=1, quota_total=2) as web:
        jane, john = web.as_user(JANE), web.as_user(JOHN)
        assert (await post(web, VIS, jane, task_id="4242"))[0] == 201
        await web.until("4242", {Phase.READY})
        status, body = await post(web, VIS, jane, task_id="4243")
        assert status == 202
        assert body["queued"]["position"] == 1 and body["queued"]["phase"] == "queued"
        assert body["queued"]["reason"] == f"{JANE} has 1 live visualization (the limit per " \
                                           "user is 1)"  # fmt: skip
        assert await web.agent.ledger.get(InstanceKey("4243")) is None
        assert (await post(web, VIS, john, task_id="5151"))[0] == 201
        status, body = await post(web, VIS, john, task_id="5152")
        assert (status, body["queued"]["position"]) == (202, 2)
        assert body["queued"]["reason"] == "all 2 visualization slots are in use"

        capacity = await get(web, "/api/v1/capacity", jane)
        assert capacity["total"] == {"used": 2, "limit": 2, "free": 0}
        assert capacity["user"] == {"name": JANE, "used": 1, "limit": 1, "free": 0}
        assert capacity["waiting"] == 2
        mine = await get(web, VIS, jane)
        assert [(q["task_id"], q["position"]) for q in mine["queued"]] == [("4243", 1)]

        # Jane's UI ends: her queued request, first in line, starts; John's waits (total full).
        assert (await post(web, f"{VIS}/4242/mlflow/stop", jane))[0] == 200
        started = await web.until("4243", {Phase.READY})
        assert started.requested_by == JANE
        assert await web.agent.ledger.get(InstanceKey("5152")) is None
        mine = await get(web, VIS, john)
        assert [(q["task_id"], q["position"]) for q in mine["queued"]] == [("5152", 1)]
        # John's own UI ends: his queued one starts.
        assert (await post(web, f"{VIS}/5151/mlflow/stop", john))[0] == 200
        await web.until("5152", {Phase.READY})
        assert (await get(web, "/api/v1/capacity", john))["waiting"] == 0
        trail = [(a.actor, a.action) for a in await web.agent.ledger.actions(InstanceKey("5152"))]
        assert trail == [(JOHN, "queue"), (JOHN, "start")]


async def test_the_lifetime_cap_queues_or_refuses(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer, quota_user_ttl=timedelta(hours=3)) as web:
        jane = web.as_user(JANE)
        assert (await post(web, VIS, jane, task_id="4242", ttl="2h"))[0] == 201
        status, body = await post(web, VIS, jane, task_id="4243", ttl="2h")
        assert status == 202 and body["queued"]["reason"].endswith(
            "2h more is over the cap of 3h")
        status, body = await post(web, VIS, jane, task_id="4244", ttl="4h")
        assert status == 400
        assert body["error"] == "TTL 4h is over the 3h of lifetime one user may hold at once"
        # Extending counts against the cap too.
        await web.until("4242", {Phase.READY})
        status, body = await post(web, f"{VIS}/4242/mlflow/extend", jane, by="2h")
        assert status == 400 and "over the cap of 3h" in body["error"]


async def test_a_group_limit_holds_back_the_groups_members_only(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer, quota_per_group={"atlas/ml": 1},
                    tool_groups={"mlflow": ["atlas/ml-support"]}) as web:  # fmt: skip
        jane = web.as_user(JANE, groups=["atlas", "atlas/ml"])
        john = web.as_user(JOHN, groups=["/atlas/ml"])
        outsider = web.as_user("Olga Other", groups=["atlas/ml-support"])
        assert (await post(web, VIS, jane, task_id="4242"))[0] == 201
        status, body = await post(web, VIS, john, task_id="5151")
        assert status == 202 and body["queued"]["reason"] == (
            "group atlas/ml has 1 live visualization (its limit is 1)")
        assert (await post(web, VIS, outsider, task_id="5152"))[0] == 201
        groups = (await get(web, "/api/v1/capacity", jane))["groups"]
        assert groups == {"atlas/ml": {"used": 1, "limit": 1, "free": 0}}


async def test_a_queued_request_can_be_cancelled_by_its_owner(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer, quota_total=1) as web:
        jane, john = web.as_user(JANE), web.as_user(JOHN)
        assert (await post(web, VIS, john, task_id="5151"))[0] == 201
        assert (await post(web, VIS, jane, task_id="4242"))[0] == 202
        assert (await post(web, f"{VIS}/4242/mlflow/stop", john))[0] == 403
        status, body = await post(web, f"{VIS}/4242/mlflow/stop", jane)
        assert status == 200 and body["cancelled"]["task_id"] == "4242"
        assert (await get(web, VIS, jane))["queued"] == []
        trail = [a.action for a in await web.agent.ledger.actions(InstanceKey("4242"))]
        assert trail == ["queue", "cancel"]


async def test_the_queue_survives_an_agent_restart(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer, quota_total=1) as web:
        assert (await post(web, VIS, web.as_user(JOHN), task_id="5151"))[0] == 201
        await web.until("5151", {Phase.READY})
        assert (await post(web, VIS, web.as_user(JANE), task_id="4242"))[0] == 202
    # A new agent and web app over the same ledger (the old ones are gone).
    async with site(tmp_path, issuer, quota_total=1) as web:
        mine = await get(web, VIS, web.as_user(JANE))
        assert [(q["task_id"], q["position"]) for q in mine["queued"]] == [("4242", 1)]
        await web.until("5151", {Phase.READY})  # the reconciler brought John's UI back
        assert (await post(web, f"{VIS}/5151/mlflow/stop", web.as_user(JOHN)))[0] == 200
        await web.until("4242", {Phase.READY})


@pytest.mark.postgres
async def test_room_freed_on_one_replica_starts_a_request_queued_on_another(
    tmp_path: Path, issuer: Issuer, pg_url: str
) -> None:
    async with (
        site(tmp_path / "a", issuer, ledger_url=pg_url, quota_total=1) as a,
        site(tmp_path / "b", issuer, ledger_url=pg_url, quota_total=1) as b,
    ):
        assert (await post(a, VIS, a.as_user(JOHN), task_id="5151"))[0] == 201
        await a.until("5151", {Phase.READY})
        status, body = await post(b, VIS, b.as_user(JANE), task_id="4242")
        assert (status, body["queued"]["position"]) == (202, 1)
        assert (await post(a, f"{VIS}/5151/mlflow/stop", a.as_user(JOHN)))[0] == 200
        started = await b.until("4242", {Phase.READY})
        assert started.requested_by == JANE
        assert len(await b.agent.ledger.list()) == 2
        assert (await get(b, "/api/v1/capacity", b.as_user(JANE)))["total"]["used"] == 1
