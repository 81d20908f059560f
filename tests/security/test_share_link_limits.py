"""Share links (issue 17): a cap on the live links of one UI, with a clear refusal, and the
records of ended shares purged a while after they end (when new links are made), their audit
entries kept. Through the web app's API with the local OIDC issuer's tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from idds_vis.domain import share_links
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.domain.share_links import ENDED_SHARES_KEPT, Share, new_share_id
from tests.catalog_support import JOHN, Site, site
from tests.oidc_issuer import running_issuer

SHARES = "/api/v1/visualizations/5151/mlflow/shares"


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_issuer() as issuer, site(tmp_path, issuer) as running:
        await running.agent.submit(VisRequest("5151", source="file:///outputs/5151"))
        await running.until("5151", {Phase.READY})
        yield running


async def make(web: Site) -> tuple[int, dict[str, object]]:
    async with web.http.post(SHARES, json={}, headers=web.as_user(JOHN)) as resp:
        return resp.status, await resp.json()


async def test_a_ui_has_at_most_so_many_live_links(
    web: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert share_links.MAX_LIVE_SHARES == 50
    monkeypatch.setattr(share_links, "MAX_LIVE_SHARES", 3)  # the same rule, fewer requests
    made = [await make(web) for _ in range(3)]
    assert [status for status, _ in made] == [201, 201, 201]
    status, body = await make(web)
    assert status == 409
    assert body["error"] == ("this UI has 3 live share links, the most it may have: revoke one "
                             "you no longer need to make another")  # fmt: skip
    first = made[0][1]["share"]
    assert isinstance(first, dict)
    async with web.http.post(f"{SHARES}/{first['id']}/revoke",
                             headers=web.as_user(JOHN)) as resp:  # fmt: skip
        assert resp.status == 200
    assert (await make(web))[0] == 201  # a revoked link no longer counts


async def test_ended_shares_are_purged_and_their_audit_stays(web: Site) -> None:
    ledger = web.agent.ledger
    inst = await ledger.get(InstanceKey("5151"))
    assert inst is not None and inst.path_token is not None
    now = web.agent.clock.now()
    long_ago = now - ENDED_SHARES_KEPT - timedelta(hours=1)

    def share(expires_at: datetime) -> Share:
        assert inst is not None and inst.path_token is not None
        return Share(id=new_share_id(), task_id="5151", tool="mlflow", token_hash="0" * 64,
                     path_token=inst.path_token, created_by=JOHN,
                     created_at=long_ago - timedelta(days=1), expires_at=expires_at)  # fmt: skip

    expired = share(long_ago)
    revoked = share(now + timedelta(hours=1))
    recent = share(now - timedelta(days=1))  # ended, but not long enough ago
    for old in (expired, revoked, recent):
        await ledger.add_share(old, attempt=inst.attempt, detail=f"share {old.id}")
    await ledger.revoke_share(revoked.id, JOHN, long_ago, detail=f"share {revoked.id}")
    assert (await make(web))[0] == 201
    assert await ledger.get_share(expired.id) is None
    assert await ledger.get_share(revoked.id) is None
    assert await ledger.get_share(recent.id) is not None
    details = [a.detail for a in await ledger.actions(inst.key) if a.action == "share-create"]
    assert f"share {expired.id}" in details and f"share {revoked.id}" in details
