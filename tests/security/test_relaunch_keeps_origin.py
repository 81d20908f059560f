"""A relaunch from the permalink must not launder a broker message's source.

A ``vis_request`` names its source; the pipeline stages such a record under the source policy
and the address guard because of its origin. Relaunching it from the catalog's permalink once
relabelled it ``permalink``, and the same source was then staged unguarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio

from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, Site, site
from tests.integration.test_catalog_login import PERMALINK, browser, sign_in
from tests.oidc_issuer import Issuer, running_issuer

SOURCE = "https://artefacts.example.org/outputs/4242.tgz"


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_issuer() as issuer, site(tmp_path, issuer) as running:
        yield running


async def test_a_relaunched_message_request_keeps_its_origin_and_source(web: Site) -> None:
    issuer: Issuer = web.issuer
    request = VisRequest("4242", source=SOURCE, ttl=timedelta(hours=1), origin="vis_request",
                         requested_by=JANE, task_name="user.jdoe.mnist/")  # fmt: skip
    await web.agent.submit(request)
    inst = await web.until("4242", {Phase.READY})
    await web.agent.teardown(inst.key)
    await web.until("4242", {Phase.EXPIRED})
    async with browser(web) as http:
        issuer.user = {"sub": "jane", "name": "Jane Doe", "groups": ["atlas"]}
        await sign_in(web, http, PERMALINK)
        async with http.post(PERMALINK + "/relaunch", allow_redirects=False) as resp:
            assert resp.status == 303
    again = await web.until("4242", {Phase.READY})
    assert again.attempt == 2
    assert again.source == SOURCE
    assert again.origin == "vis_request"  # so the pipeline stages it under the message guard
