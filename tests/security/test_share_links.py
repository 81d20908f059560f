"""Issue 17: share links and visibility changes, attacked through ``/auth/check`` (the
Kubernetes forward-auth) and the local deployer's proxy.

A share link opens one UI, for viewing only, until it is revoked or it or its UI expires, and
never another UI or a relaunched one; its token is in no log and no audit text; only the owner
(or production) makes, lists and revokes them, and not too fast. Each test fails without the
defence it names."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from sqlalchemy import create_engine, update
from yarl import URL

from idds_vis.api.auth import share_links
from idds_vis.api.routes.shares import SHARES_RATE
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.domain.share_links import (
    SHARE_ENDED,
    SHARE_EXPIRED,
    SHARE_REVOKED,
    SHARE_WRONG_INSTANCE,
    Share,
    good_until,
    new_share_id,
    refusal,
    share_expiry,
    shareable,
)
from idds_vis.ledger import SqlLedger
from idds_vis.ledger.schema import metadata, shares
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import running_issuer
from tests.security.test_ui_access_local import (  # noqa: F401 (the fixture)
    LocalSite,
    browser,
    jane_with_her_ui,
    web,
)

CHECK = "/auth/check"
VIS = "/api/v1/visualizations"


@pytest_asyncio.fixture
async def k8s(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_issuer() as issuer, site(tmp_path, issuer) as running:
        yield running


async def ui_of(at: Site, task_id: str, user: str = JANE) -> Instance:
    async with at.http.post(VIS, json={"task_id": task_id}, headers=at.as_user(user)) as resp:
        assert resp.status == 201, await resp.text()
    return await at.until(task_id, {Phase.READY})


async def make_link(at: Site, task_id: str, headers: dict[str, str] | None = None,
                    **body: Any) -> tuple[int, dict[str, Any]]:  # fmt: skip
    async with at.http.post(f"{VIS}/{task_id}/mlflow/shares", json=body,
                             headers=headers or at.as_user(JANE)) as resp:  # fmt: skip
        return resp.status, await resp.json()


async def open_link(at: Site, link: str) -> tuple[int, SimpleCookie, str, str]:
    """A colleague's fresh browser at the link: status, cookies set, Location, body."""
    async with aiohttp.ClientSession() as colleague, colleague.get(
        link, allow_redirects=False
    ) as resp:
        cookies: SimpleCookie = SimpleCookie()
        for header in resp.headers.getall("Set-Cookie", []):
            cookies.load(header)
        return resp.status, cookies, resp.headers.get("Location", ""), await resp.text()


def token_of(link: str) -> str:
    return URL(link).path.removeprefix("/s/")


async def check(at: Site, inst: Instance, token: str | None, **headers: str) -> int:
    sent = {"X-Original-URI": f"{inst.prefix}/static-files/main.js", **headers}
    if token is not None:
        sent["Cookie"] = f"{share_links.COOKIE}={token}"
    async with at.http.get(CHECK, headers=sent) as resp:
        return resp.status


async def denied(at: Site) -> dict[str, float]:
    async with at.http.get("/metrics") as resp:
        text = await resp.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("idds_vis_ui_access_denied_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


async def audit(at: Site, task_id: str) -> list[tuple[str, str, str]]:
    actions = await at.agent.ledger.actions(InstanceKey(task_id))  # type: ignore[attr-defined]
    return [(a.action, a.actor, a.detail or "") for a in actions]


async def test_a_link_opens_its_ui_for_viewing_only_and_every_use_is_audited(
    k8s: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    inst = await ui_of(k8s, "4242")
    status, body = await make_link(k8s, "4242", label="for Ana")
    assert status == 201, body
    link, share = body["link"], body["share"]
    assert inst.expires_at is not None
    assert link.startswith(f"{k8s.url}/s/") and share["expires_at"] == inst.expires_at.isoformat()
    token = token_of(link)
    status, cookies, location, _ = await open_link(k8s, link + "?x=1")
    assert (status, location) == (303, inst.url)
    cookie = cookies[share_links.COOKIE]
    assert cookie.value == token and cookie["path"] == f"{inst.prefix}/"
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert inst.expires_at is not None
    left = (inst.expires_at - k8s.agent.clock.now()).total_seconds()
    assert 0 < int(cookie["max-age"]) <= left
    # The page that sent the link gets no Referer naming it from the UI's requests.
    async with aiohttp.ClientSession() as fresh, fresh.get(link, allow_redirects=False) as resp:
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
    # The cookie lets the colleague (no session, or another user's) see that UI ...
    assert await check(k8s, inst, token) == 204
    assert await check(k8s, inst, token, **k8s.as_user(JOHN, groups=["cms"])) == 204
    assert await check(k8s, inst, None) == 401  # ... and nothing else does
    # ... and never act on it: the API knows no share holders.
    cookie_only = {"Cookie": f"{share_links.COOKIE}={token}", "Origin": k8s.url}
    for path, body_ in [("extend", {"by": "1h"}), ("stop", {}), ("shares", {})]:
        async with k8s.http.post(f"{VIS}/4242/mlflow/{path}", json=body_,
                                 headers=cookie_only) as resp:  # fmt: skip
            assert resp.status == 401, (path, await resp.text())
    async with k8s.http.get(f"{VIS}/4242/mlflow/shares", headers=cookie_only) as resp:
        assert resp.status == 401
    assert (await k8s.agent.ledger.get(inst.key)).phase is Phase.READY  # type: ignore[union-attr]
    # Audited: the creation by Jane and each opening (two) by an anonymous address, by id.
    trail = await audit(k8s, "4242")
    assert ("share-create", JANE) in [(a, b) for a, b, _ in trail]
    uses = [t for t in trail if t[0] == "share-use"]
    assert len(uses) == 2 and uses[0][1] == "anonymous 127.0.0.1"
    assert share["id"] in uses[0][2] and "127.0.0.1" in uses[0][2]
    # The token is in no log line and no audit field; the share id is.
    assert token not in caplog.text and token.split(".")[2] not in caplog.text
    assert share["id"] in caplog.text
    assert not any(token in field or token.split(".")[2] in field
                   for entry in trail for field in entry)  # fmt: skip


def _forged(token: str, **changes: Any) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode({**claims, **changes}, b"k" * 32, algorithm="HS256")


async def test_forged_altered_and_foreign_tokens_are_refused(k8s: Site) -> None:
    inst = await ui_of(k8s, "4242")
    other = await ui_of(k8s, "4243")
    _, body = await make_link(k8s, "4242")
    token = token_of(body["link"])
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    resigned = jwt.encode({**claims, "sub": other.path_token}, b"k" * 32, algorithm="HS256")
    bad = [
        _forged(token),  # its claims, another key
        resigned,
        unsigned,
        f"{header}.{payload}.{signature[:-2]}AA",  # altered signature
        f"{header}.{jwt.utils.base64url_encode(b'{}').decode()}.{signature}",  # altered claims
        "not-a-token",
        "x" * 5000,
    ]
    for forged in bad:
        status, cookies, _, text = await open_link(k8s, f"{k8s.url}/s/{forged}")
        assert status == 403 and "not valid" in text and share_links.COOKIE not in cookies
        assert await check(k8s, inst, forged) == 403
    # A good token for 4242 opens nothing at 4243's path.
    assert await check(k8s, other, token) == 403
    seen = await denied(k8s)
    assert seen["share_invalid"] == 2 * len(bad) and seen["share_wrong_instance"] == 1
    refused = [t for t in await audit(k8s, "4242") if t[0] == "share-refused"]
    assert len(refused) == 1 and "share_wrong_instance" in refused[0][2]


async def test_revoked_and_expired_links_and_a_relaunched_ui_refuse(k8s: Site) -> None:
    inst = await ui_of(k8s, "4242")
    _, first = await make_link(k8s, "4242", expires_in="1h")
    _, second = await make_link(k8s, "4242", expires_in="3d")  # capped at the UI's expiry
    assert first["share"]["expires_at"] < second["share"]["expires_at"]
    assert second["share"]["expires_at"] == inst.expires_at.isoformat()  # type: ignore[union-attr]
    one, two = token_of(first["link"]), token_of(second["link"])
    assert await check(k8s, inst, one) == 204
    # Revoked: at once, at the link and with the cookie already set.
    async with k8s.http.post(f"{VIS}/4242/mlflow/shares/{first['share']['id']}/revoke",
                             headers=k8s.as_user(JANE)) as resp:  # fmt: skip
        assert resp.status == 200 and (await resp.json())["share"]["state"] == "revoked"
    status, _, _, text = await open_link(k8s, first["link"])
    assert status == 403 and "revoked" in text
    assert await check(k8s, inst, one) == 403
    assert await check(k8s, inst, two) == 204
    # Expired by its own time: the clock passes the share's expiry (moved in the ledger).
    _, third = await make_link(k8s, "4242", expires_in="1h")
    now = k8s.agent.clock.now()
    await past(k8s, third["share"]["id"], now - timedelta(seconds=1))
    status, _, _, text = await open_link(k8s, third["link"])
    assert status == 403 and "expired" in text
    assert await check(k8s, inst, token_of(third["link"])) == 403
    # Expired with its UI: the UI's expiry passes (the reaper ends it).
    await k8s.agent.ledger.set_expiry(inst.key, now - timedelta(seconds=1), now)
    await k8s.until("4242", {Phase.EXPIRED})
    assert await check(k8s, inst, two) == 403
    status, _, _, text = await open_link(k8s, second["link"])
    assert status == 403 and "expired" in text
    # Relaunched: a new path; the old link opens neither the old nor the new one.
    await k8s.agent.relaunch(inst.key)
    again = await k8s.until("4242", {Phase.READY})
    assert again.path_token != inst.path_token
    assert await check(k8s, again, two) == 403
    status, _, _, _ = await open_link(k8s, second["link"])
    assert status == 403
    seen = await denied(k8s)
    assert seen["share_revoked"] == 2 and seen["share_expired"] >= 2
    assert seen["share_wrong_instance"] + seen["share_ended"] >= 2
    actions = [a for a, _, _ in await audit(k8s, "4242")]
    assert actions.count("share-revoke") == 1 and actions.count("share-refused") >= 4



async def past(at: Site, share_id: str, when: datetime) -> None:
    ledger = at.agent.ledger
    assert isinstance(ledger, SqlLedger)
    async with ledger.engine.begin() as conn:
        await conn.execute(update(shares).where(shares.c.id == share_id).values(expires_at=when))


async def test_only_the_owner_or_production_makes_lists_and_revokes_links(k8s: Site) -> None:
    await ui_of(k8s, "4242")
    _, made = await make_link(k8s, "4242")
    sid = made["share"]["id"]
    john = k8s.as_user(JOHN, groups=["cms"])
    manager = k8s.as_user(JOHN, groups=["atlas/ml-support"])  # may stop it, not share it
    for who in (john, manager):
        status, body = await make_link(k8s, "4242", headers=who)
        assert status == 403 and "may not share" in body["error"]
        async with k8s.http.get(f"{VIS}/4242/mlflow/shares", headers=who) as resp:
            assert resp.status == 403
        async with k8s.http.post(f"{VIS}/4242/mlflow/shares/{sid}/revoke", headers=who) as resp:
            assert resp.status == 403
        async with k8s.http.post(f"{VIS}/4242/mlflow/visibility", headers=who,
                                 json={"visibility": "signed-in"}) as resp:  # fmt: skip
            assert resp.status == 403
    async with k8s.http.post(f"{VIS}/4242/mlflow/shares", json={}) as resp:
        assert resp.status in (401, 403)  # nobody signed in (and no Origin: cross-site)
    # A share of one UI cannot be revoked through another's address.
    await ui_of(k8s, "4243")
    async with k8s.http.post(f"{VIS}/4243/mlflow/shares/{sid}/revoke",
                             headers=k8s.as_user(JANE)) as resp:  # fmt: skip
        assert resp.status == 404
    production = k8s.as_user("Pat Prod", groups=["atlas/production"])
    status, _ = await make_link(k8s, "4242", headers=production)
    assert status == 201
    async with k8s.http.get(f"{VIS}/4242/mlflow/shares", headers=k8s.as_user(JANE)) as resp:
        listed = await resp.json()
    assert len(listed["shares"]) == 2 and all("token" not in str(s) for s in listed["shares"])
    assert [s["state"] for s in listed["shares"]] == ["active", "active"]
    # Bad input: one line each.
    bad: list[dict[str, Any]] = [{"expires_in": "soon"}, {"expires_in": "10s"},
                                 {"label": "x" * 200}]  # fmt: skip
    for body in bad:
        status, answer = await make_link(k8s, "4242", **body)
        assert status == 400 and "\n" not in answer["error"], body


async def test_making_links_is_rate_limited_per_person(k8s: Site) -> None:
    await ui_of(k8s, "4242")
    allowed = int(SHARES_RATE.split("/")[0])
    for _ in range(allowed):
        status, _ = await make_link(k8s, "4242")
        assert status == 201
    status, body = await make_link(k8s, "4242")
    assert status == 429 and "too many share links" in body["error"]
    async with k8s.http.get("/metrics") as resp:
        assert 'idds_vis_access_denied_total{reason="share_rate_limit"} 1.0' in await resp.text()
    status, _ = await make_link(k8s, "4242", headers=k8s.as_user("Pat Prod",
                                                                  groups=["atlas/production"]))
    assert status == 201  # another person's budget


async def test_changing_the_visibility_takes_effect_at_once(k8s: Site) -> None:
    inst = await ui_of(k8s, "4242")
    john = k8s.as_user(JOHN, groups=["cms"])
    assert await check(k8s, inst, None, **john) == 403

    async def change(visibility: str) -> tuple[int, dict[str, Any]]:
        async with k8s.http.post(f"{VIS}/4242/mlflow/visibility", json={"visibility": visibility},
                                 headers=k8s.as_user(JANE)) as resp:  # fmt: skip
            return resp.status, await resp.json()

    status, body = await change("groups:cms")
    assert (status, body["visibility"]) == (200, "groups:cms")
    assert await check(k8s, inst, None, **john) == 204
    status, body = await change("public")  # the operator has not allowed public UIs
    assert status == 400 and "not allowed" in body["error"]
    status, body = await change("everyone!")
    assert status == 400 and "\n" not in body["error"]
    assert await check(k8s, inst, None, **john) == 204  # unchanged by the refusals
    status, _ = await change("private")
    assert status == 200 and await check(k8s, inst, None, **john) == 403
    trail = [(a, d) for a, _, d in await audit(k8s, "4242") if a == "visibility"]
    assert trail == [("visibility", "private -> groups:cms"),
                     ("visibility", "groups:cms -> private")]  # fmt: skip


async def test_public_visibility_where_the_operator_allows_it(tmp_path: Path) -> None:
    async with running_issuer() as issuer, site(tmp_path, issuer, allow_public_uis=True) as at:
        inst = await ui_of(at, "4242")
        async with at.http.post(f"{VIS}/4242/mlflow/visibility", json={"visibility": "public"},
                                headers=at.as_user(JANE)) as resp:  # fmt: skip
            assert resp.status == 200
        assert await check(at, inst, None) == 204


async def test_a_link_through_the_local_proxy_until_revoked(web: LocalSite) -> None:  # noqa: F811
    async with jane_with_her_ui(web) as (jane, inst), browser(web) as colleague:
        assert inst.url is not None
        async with jane.get("/api/v1/me") as resp:
            csrf = {"X-CSRF-Token": (await resp.json())["csrf_token"]}
        async with jane.post(f"{VIS}/4242/mlflow/shares", json={}, headers=csrf) as resp:
            assert resp.status == 201, await resp.text()
            made = await resp.json()
        # The colleague (no session) follows the link to the UI, through the proxy.
        async with colleague.get(made["link"]) as resp:
            assert resp.status == 200 and "stand-in UI" in await resp.text()
            assert str(resp.url) == inst.url
        async with colleague.post(inst.url + "ajax-api/2.0/mlflow/experiments/search",
                                  json={"max_results": 10}) as resp:  # fmt: skip
            assert resp.status == 200
        # Only this UI's path carries the cookie; elsewhere the colleague is nobody.
        async with colleague.get(f"{VIS}/4242/mlflow") as resp:
            assert resp.status == 401
        sid = made["share"]["id"]
        async with jane.post(f"{VIS}/4242/mlflow/shares/{sid}/revoke", headers=csrf) as resp:
            assert resp.status == 200
        async with colleague.get(inst.url, allow_redirects=False) as resp:
            assert resp.status == 403 and "revoked" in await resp.text()
            assert "stand-in" not in await resp.text()
        # The refused cookie is dropped: the next visit is an ordinary one (sign in).
        async with colleague.get(inst.url, allow_redirects=False) as resp:
            assert resp.status == 303 and "/auth/login" in resp.headers["Location"]
        trail = [a.action for a in await web.agent.ledger.actions(inst.key)]  # type: ignore[attr-defined]
        assert trail.count("share-use") == 1 and trail.count("share-refused") == 1


async def test_the_signing_key_alone_forges_nothing(k8s: Site, tmp_path: Path) -> None:
    """Whoever learns the signing key (from the session key) still needs the ledger's record:
    a token re-signed with other claims, or for a share id the ledger does not hold, fails."""
    inst = await ui_of(k8s, "4242")
    _, made = await make_link(k8s, "4242", expires_in="1h")
    key = share_links.derive_key((tmp_path / "session.key").read_text().strip().encode())
    token = token_of(made["link"])
    claims = jwt.decode(token, key, algorithms=["HS256"])  # the right key: it verifies
    longer = jwt.encode({**claims, "exp": claims["exp"] + 86400}, key, algorithm="HS256")
    unknown = jwt.encode({**claims, "jti": "0" * 32}, key, algorithm="HS256")
    for forged in (longer, unknown):
        status, _, _, text = await open_link(k8s, f"{k8s.url}/s/{forged}")
        assert status == 403 and "not valid" in text
        assert await check(k8s, inst, forged) == 403
    assert await check(k8s, inst, token) == 204


async def test_the_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    https: dict[str, Any] = {"web_url": "https://vis.example.org"}
    async with running_issuer() as issuer, site(tmp_path, issuer, **https) as at:
        await ui_of(at, "4242")
        _, made = await make_link(at, "4242")
        assert made["link"].startswith("https://vis.example.org/s/")
        _, cookies, _, _ = await open_link(at, at.url + URL(made["link"]).path)
        assert cookies[share_links.COOKIE]["secure"]


async def test_an_older_ledger_gains_the_shares_table(tmp_path: Path) -> None:
    """A ledger made before share links (no vis_shares) opens and keeps shares."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema of before: every table but vis_shares
        engine = create_engine(f"sqlite:///{path}")
        metadata.create_all(engine, tables=[t for t in metadata.sorted_tables
                                            if t.name != "vis_shares"])  # fmt: skip
        engine.dispose()
        assert "vis_shares" not in {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}  # fmt: skip
    ledger = SqlLedger(f"sqlite+aiosqlite:///{path}")
    await ledger.open()
    try:
        now = datetime.now().astimezone()
        share = Share(new_share_id(), "1", "mlflow", "mlflow-" + "a" * 32, JANE, now,
                      now + timedelta(hours=1), token_hash="b" * 64)  # fmt: skip
        await ledger.add_share(share, attempt=1, detail=f"share {share.id}")
        assert await ledger.get_share(share.id) == share
        assert [a.action for a in await ledger.actions(share.key)] == ["share-create"]
    finally:
        await ledger.close()


def test_the_share_rules_in_order() -> None:
    """``domain.share_links``: what a share opens, decided without I/O."""
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    ui = Instance(task_id="1", tool="mlflow", name="mlflow-x-1", phase=Phase.READY, source=None,
                  ttl=timedelta(hours=2), created_at=now, updated_at=now,
                  expires_at=now + timedelta(hours=2), path_token="mlflow-" + "a" * 32)  # fmt: skip
    share = Share("c" * 32, "1", "mlflow", ui.path_token or "", JANE, now, now + timedelta(hours=1))
    assert refusal(share, ui, ui.path_token, now) is None
    assert refusal(share, ui, None, now) is None  # the link itself
    assert refusal(share, ui, "mlflow-" + "b" * 32, now) == SHARE_WRONG_INSTANCE
    assert refusal(replace(share, revoked_at=now), ui, None, now) == SHARE_REVOKED
    assert refusal(share, ui, None, now + timedelta(hours=1)) == SHARE_EXPIRED
    shorter = replace(ui, expires_at=now + timedelta(minutes=5))  # the UI ends first
    assert refusal(share, shorter, None, now + timedelta(minutes=5)) == SHARE_EXPIRED
    relaunched = replace(ui, path_token="mlflow-" + "d" * 32)
    assert refusal(share, relaunched, None, now) == SHARE_ENDED
    assert refusal(share, None, None, now) == SHARE_ENDED
    assert refusal(share, replace(ui, phase=Phase.EXPIRED), None, now) == SHARE_EXPIRED
    assert good_until(share, shorter) == now + timedelta(minutes=5)
    # A new share: at the UI's expiry by default, never after it, never under a minute.
    end = now + timedelta(hours=2)
    assert share_expiry(now, end, None) == end
    assert share_expiry(now, end, timedelta(days=3)) == end
    assert share_expiry(now, end, timedelta(minutes=30)) == now + timedelta(minutes=30)
    with pytest.raises(InvalidRequest):
        share_expiry(now, end, timedelta(seconds=5))
    with pytest.raises(InvalidRequest):
        shareable(replace(ui, phase=Phase.DEPLOYING), now)
    with pytest.raises(InvalidRequest):
        shareable(replace(ui, path_token=None), now)


async def test_a_refused_cookie_coming_back_is_counted_each_time_and_audited_once(
    k8s: Site,
) -> None:
    inst = await ui_of(k8s, "4242")
    _, made = await make_link(k8s, "4242")
    async with k8s.http.post(f"{VIS}/4242/mlflow/shares/{made['share']['id']}/revoke",
                             headers=k8s.as_user(JANE)) as resp:  # fmt: skip
        assert resp.status == 200
    for _ in range(5):  # a page's requests, each through nginx's forward-auth
        assert await check(k8s, inst, token_of(made["link"])) == 403
    assert (await denied(k8s))["share_revoked"] == 5
    refused = [t for t in await audit(k8s, "4242") if t[0] == "share-refused"]
    assert len(refused) == 1 and "share_revoked" in refused[0][2]


async def test_the_ledger_keeps_shares_on_postgresql(pg_url: str) -> None:
    """The same share records on PostgreSQL: made with their audit entry, revoked once."""
    ledger = SqlLedger(pg_url)
    await ledger.open()
    try:
        now = datetime.now(UTC)
        share = Share(new_share_id(), "1", "mlflow", "mlflow-" + "a" * 32, JANE, now,
                      now + timedelta(hours=1), token_hash="b" * 64, label="Ana")  # fmt: skip
        await ledger.add_share(share, attempt=1, detail=f"share {share.id}")
        assert await ledger.get_share(share.id) == share
        assert await ledger.shares_of(share.key) == [share]
        first = await ledger.revoke_share(share.id, JANE, now, detail=f"share {share.id}")
        again = await ledger.revoke_share(share.id, JOHN, now + timedelta(minutes=1),
                                          detail=f"share {share.id}")  # fmt: skip
        assert first is not None and again is not None
        assert (again.revoked_at, again.revoked_by) == (now, JANE)  # the first revocation stays
        actions = [a.action for a in await ledger.actions(share.key)]
        assert actions == ["share-create", "share-revoke"]
        assert await ledger.revoke_share("f" * 32, JANE, now, detail="x") is None
    finally:
        await ledger.close()


async def test_a_link_ends_with_a_stop_and_opens_nothing_after_a_start_from_the_catalog(
    k8s: Site,
) -> None:
    inst = await ui_of(k8s, "4242")
    _, made = await make_link(k8s, "4242")
    token = token_of(made["link"])
    async with k8s.http.post(f"{VIS}/4242/mlflow/stop", headers=k8s.as_user(JANE)) as resp:
        assert resp.status == 200, await resp.text()
    await k8s.until("4242", {Phase.EXPIRED})
    assert await check(k8s, inst, token) == 403
    again = await ui_of(k8s, "4242")  # the catalog's start of the ended record (quota queue)
    assert again.attempt == 2 and again.path_token != inst.path_token
    assert await check(k8s, again, token) == 403
    status, _, _, _ = await open_link(k8s, made["link"])
    assert status == 403
