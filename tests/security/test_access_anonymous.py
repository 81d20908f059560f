"""Abuse: without an issuer, anonymous permalink starts took any TTL and skipped every quota.

Reported: three anonymous 7-day starts with ``quota_total: 1`` all started, and the Origin
check stops only browsers (these clients send the app's own Origin, as any script can). Now
starts from the network are refused unless ``allow_anonymous_starts``; then the total, the
per-address and the TTL limits hold; relaunch is guarded the same way; the local path (a
browser on the web app's own machine) keeps working.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from idds_vis.api.catalog.anonymous import AnonymousLimits
from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings, load_settings
from tests.fakes import wait_for_phase
from tests.security.access_support import LOOPBACK_PROXY, Site, path, via_proxy, web_app

ALLOWED = {"allow_anonymous_starts": True, "trusted_proxies": LOOPBACK_PROXY}


async def _start(site: Site, i: int, client: str | None, ttl: str | None = None) -> int:
    headers = via_proxy(client) if client else {}
    form = {"ttl": ttl} if ttl else {}
    async with site.http.post(path(i) + "/start", data=form, headers=headers,
                              allow_redirects=False) as resp:  # fmt: skip
        return resp.status


async def test_network_starts_are_refused_without_an_issuer(tmp_path: Path) -> None:
    async with web_app(tmp_path, trusted_proxies=LOOPBACK_PROXY) as site:
        assert await _start(site, 0, "203.0.113.7", "1h") == 403
        async with site.http.post(path(0) + "/start", headers=via_proxy("203.0.113.7")) as r:
            assert "takes starts only from its own machine" in await r.text()
        assert await site.agent.ledger.list() == []
        # The local path: a browser on this machine still starts.
        assert await _start(site, 1, None, "1h") == 303
        assert [i.task_id for i in await site.agent.ledger.list()] == ["5001"]
        assert (await site.denied())["anonymous_from_network"] == 2


async def test_forwarding_headers_from_an_untrusted_loopback_peer_are_the_network(
    tmp_path: Path,
) -> None:
    """A proxy on this machine that the operator did not list forwards network clients: its
    requests come from loopback but carry X-Forwarded-For; they are not local."""
    async with web_app(tmp_path) as site:
        assert await _start(site, 0, "203.0.113.7", "1h") == 403
        assert await site.agent.ledger.list() == []


async def test_the_reported_abuse_week_long_starts_over_quota_total(tmp_path: Path) -> None:
    async with web_app(tmp_path, quota_total=1, **ALLOWED) as site:
        clients = ["203.0.113.7", "203.0.113.8", "203.0.113.9"]
        assert [await _start(site, i, c, "7d") for i, c in enumerate(clients)] == [400] * 3
        assert await site.agent.ledger.list() == []
        assert [await _start(site, i, c, "2h") for i, c in enumerate(clients)] == [303, 429, 429]
        (only,) = await site.agent.ledger.list()
        assert (only.task_id, only.ttl, only.requested_by) == (
            "5000", timedelta(hours=2), "anonymous 203.0.113.7")
        denied = await site.denied()
        assert (denied["anonymous_ttl"], denied["anonymous_total"]) == (3, 2)


async def test_one_address_holds_at_most_its_quota(tmp_path: Path) -> None:
    async with web_app(tmp_path, anonymous_quota_per_address=1, **ALLOWED) as site:
        assert await _start(site, 0, "203.0.113.7") == 303
        assert await _start(site, 1, "203.0.113.7") == 429
        assert await _start(site, 1, "203.0.113.8") == 303
        owners = sorted(i.requested_by or "" for i in await site.agent.ledger.list())
        assert owners == ["anonymous 203.0.113.7", "anonymous 203.0.113.8"]


async def test_the_default_lifetime_is_cut_to_the_anonymous_cap(tmp_path: Path) -> None:
    async with web_app(tmp_path, anonymous_max_ttl=timedelta(hours=1), **ALLOWED) as site:
        assert await _start(site, 0, "203.0.113.7") == 303
        (inst,) = await site.agent.ledger.list()
        assert inst.ttl == timedelta(hours=1)


async def test_relaunch_from_the_network_is_guarded_like_a_start(tmp_path: Path) -> None:
    async with web_app(tmp_path, trusted_proxies=LOOPBACK_PROXY) as site:
        queue = site.agent.events.subscribe()
        assert await _start(site, 0, None, "1h") == 303  # started on this machine
        await wait_for_phase(site.agent, queue, "5000", {Phase.READY})
        await site.agent.teardown(InstanceKey("5000"))
        await wait_for_phase(site.agent, queue, "5000", {Phase.EXPIRED})
        async with site.http.post(path(0) + "/relaunch", headers=via_proxy("203.0.113.7"),
                                  allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 403
        inst = await site.agent.ledger.get(InstanceKey("5000"))
        assert inst is not None and (inst.phase, inst.attempt) == (Phase.EXPIRED, 1)
        # From this machine it relaunches, requested by (and audited as) its address.
        async with site.http.post(path(0) + "/relaunch", allow_redirects=False) as resp:
            assert resp.status == 303
        again = await wait_for_phase(site.agent, queue, "5000", {Phase.READY})
        assert again.attempt == 2
        trail = [(a.actor, a.action) for a in await site.agent.ledger.actions(InstanceKey("5000"))]
        assert trail[-1] == ("anonymous 127.0.0.1", "relaunch")


def test_the_settings_read_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("allow_anonymous_starts: true\nanonymous_max_ttl: 2h\n"
                      "anonymous_quota_per_address: 1\nstream_lifetime: 90s\n"
                      "stream_limit_per_client: 3\ntrusted_proxies: [10.0.0.0/8]\n")  # fmt: skip
    settings = load_settings(config)
    assert (settings.anonymous_max_ttl, settings.stream_lifetime) == (
        timedelta(hours=2), timedelta(seconds=90))
    limits = AnonymousLimits.of(settings)
    assert (limits.from_network, limits.per_address) == (True, 1)
    assert settings.trusted_proxies == ["10.0.0.0/8"] and settings.stream_limit_per_client == 3
    # The safe default: no anonymous starts from the network.
    assert not AnonymousLimits.of(Settings()).from_network
