"""Abuse: behind a proxy every client looked like the proxy (one rate-limit bucket for all),
and believing X-Forwarded-For from anyone would let a client pick its own address. Now the
header is honoured only when the direct peer is in ``trusted_proxies``, and the client is the
right-most address in it that is not a trusted proxy: rate limits, stream caps, anonymous
quotas and the audit trail see the real client."""

from __future__ import annotations

from pathlib import Path

import pytest

from idds_vis.api.auth.forwarded import parse_networks
from idds_vis.domain.models import InstanceKey
from tests.security.access_support import LOOPBACK_PROXY, Site, via_proxy, web_app


async def _status(site: Site, client: str | None) -> int:
    headers = via_proxy(client) if client else {}
    async with site.http.get("/api/v1/tasks/5000", headers=headers) as resp:
        return resp.status


async def test_behind_a_trusted_proxy_each_client_has_its_own_rate_limit(tmp_path: Path) -> None:
    async with web_app(tmp_path, trusted_proxies=LOOPBACK_PROXY, rate_limit="2/minute") as site:
        a, b = "203.0.113.7", "203.0.113.8"
        assert [await _status(site, a) for _ in range(3)] == [404, 404, 429]
        assert await _status(site, b) == 404  # another client behind the same proxy
        assert (await site.denied())["rate_limit"] == 1


async def test_an_untrusted_peer_cannot_choose_its_address(tmp_path: Path) -> None:
    """Not listed: the header is ignored, so a new made-up address per request buys nothing."""
    async with web_app(tmp_path, rate_limit="2/minute") as site:
        made_up = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        assert [await _status(site, c) for c in made_up] == [404, 404, 429]


async def test_the_right_most_untrusted_address_is_the_client(tmp_path: Path) -> None:
    """The client wrote the left part itself; the proxies (127.0.0.1, then 10.x) appended the
    rest. The audit trail names the address the outer proxy saw."""
    settings = {"trusted_proxies": [*LOOPBACK_PROXY, "10.0.0.0/8"],
                "allow_anonymous_starts": True}  # fmt: skip
    async with web_app(tmp_path, **settings) as site:  # type: ignore[arg-type]
        chain = "127.0.0.1, 198.51.100.9, 203.0.113.7, 10.1.2.3"
        async with site.http.post("/t/user.jdoe.t0/mlflow/start", headers=via_proxy(chain),
                                  allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303
        trail = await site.agent.ledger.actions(InstanceKey("5000"))
        assert [a.actor for a in trail][:1] == ["anonymous 203.0.113.7"]
        (inst,) = await site.agent.ledger.list()
        assert inst.requested_by == "anonymous 203.0.113.7"


def test_a_bad_entry_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"trusted_proxies: 'ten\.0\.0\.0/8' is not an IP"):
        parse_networks(["127.0.0.1", "ten.0.0.0/8"])
