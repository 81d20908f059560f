"""Browser-style sign-in against a real local OIDC issuer (authorization code + PKCE), the
session cookie and its CSRF protection, the permalink behind the login, and the iDDS work's
token for its reads (``IDDS_VIS_TOKEN_FILE``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.idds.channel import AgentEndpoint, ChannelError, task_status
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import Issuer, running_issuer
from tests.web_support import sse

VIS = "/api/v1/visualizations"
PERMALINK = "/t/user.jdoe.mnist%2F/mlflow"


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


@pytest_asyncio.fixture
async def web(tmp_path: Path, issuer: Issuer) -> AsyncIterator[Site]:
    async with site(tmp_path, issuer) as running:
        yield running


def browser(web: Site) -> aiohttp.ClientSession:
    """A client keeping cookies like a browser; loopback http counts as a secure origin (as
    browsers treat localhost), so the Secure session cookie is sent back."""
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[URL(web.url)])  # an IP host
    return aiohttp.ClientSession(web.url, cookie_jar=jar, headers={"Origin": web.url})


async def sign_in(web: Site, http: aiohttp.ClientSession, next_: str = "/catalog") -> str:
    """Through the issuer and back; returns where the app sent the browser at the end."""
    async with http.get("/auth/login", params={"next": next_}, allow_redirects=False) as resp:
        assert resp.status == 302
        authorize = resp.headers["Location"]
    async with http.get(authorize, allow_redirects=False) as resp:  # the issuer approves
        assert resp.status == 302
        back = resp.headers["Location"]
    async with http.get(back, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Location"]


async def csrf(http: aiohttp.ClientSession) -> str:
    async with http.get("/api/v1/me") as resp:
        token: str = (await resp.json())["csrf_token"]
    return token


async def test_sign_in_with_pkce_ends_in_a_guarded_session_cookie(web: Site) -> None:
    async with browser(web) as http:
        async with http.get("/auth/login", params={"next": "/catalog"},
                            allow_redirects=False) as resp:  # fmt: skip
            authorize = urlsplit(resp.headers["Location"])
            cookie = SimpleCookie(resp.headers["Set-Cookie"])["idds_vis_session"]
        assert authorize.geturl().startswith(f"{web.issuer.url}/authorize?")
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
        assert query["redirect_uri"] == [f"{web.url}/auth/callback"]
        assert query["scope"] == ["openid profile email"] and query["state"] and query["nonce"]
        assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"

        async with http.get(authorize.geturl(), allow_redirects=False) as resp:
            back = resp.headers["Location"]
        async with http.get(back, allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (303, "/catalog")
        assert web.issuer.verifier_checks == [True]  # the issuer checked our PKCE verifier

        async with http.get("/api/v1/me") as resp:
            me = await resp.json()
        assert me["identity"]["user"] == JANE and me["via"] == "session"
        assert me["identity"]["groups"] == ["atlas"] and me["csrf_token"]

        # The code is single-use and the sign-in's state is spent.
        async with http.get(back, allow_redirects=False) as resp:
            assert resp.status == 400
            assert "has already been used" in await resp.text()


async def test_state_changes_with_the_cookie_need_the_csrf_token(web: Site) -> None:
    async with browser(web) as http:
        await sign_in(web, http)
        async with http.post(VIS, json={"task_id": "4242"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "missing or wrong CSRF token: reload the page"
        async with http.post(VIS, json={"task_id": "4242"},
                             headers={"X-CSRF-Token": "guessed"}) as resp:  # fmt: skip
            assert resp.status == 403
        assert await web.agent.ledger.list() == []
        async with http.post(VIS, json={"task_id": "4242"},
                             headers={"X-CSRF-Token": await csrf(http)}) as resp:  # fmt: skip
            assert resp.status == 201
        # Another site's page cannot post with the cookie (the Origin check comes first).
        async with http.post(VIS, json={"task_id": "4243"}, headers={
                "Origin": "https://evil.example.org", "X-CSRF-Token": await csrf(http)}) as resp:
            assert resp.status == 403
        trail = await web.agent.ledger.actions(InstanceKey("4242"))
        assert [(a.actor, a.action) for a in trail] == [(JANE, "start")]

        token = await csrf(http)
        async with http.post("/auth/logout", data={"csrf_token": token},
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303
        async with http.get("/api/v1/me") as resp:
            assert (await resp.json())["identity"] is None


@pytest.mark.parametrize("wanted", ["https://evil.example.org/x", "//evil.example.org/x",
                                    "/\\evil.example.org"])  # fmt: skip
async def test_sign_in_never_redirects_to_another_site(web: Site, wanted: str) -> None:
    async with browser(web) as http:
        assert await sign_in(web, http, wanted) == "/catalog"


async def test_a_tampered_state_is_refused(web: Site) -> None:
    async with browser(web) as http:
        async with http.get("/auth/login", allow_redirects=False) as resp:
            authorize = resp.headers["Location"]
        async with http.get(authorize, allow_redirects=False) as resp:
            back = urlsplit(resp.headers["Location"])
        code = parse_qs(back.query)["code"][0]
        async with http.get("/auth/callback", params={"code": code, "state": "forged"}) as resp:
            assert resp.status == 400
            assert "state does not match" in await resp.text()
        async with http.get("/api/v1/me") as resp:
            assert (await resp.json())["identity"] is None


async def test_the_catalog_stream_shows_the_progress_of_a_start(web: Site) -> None:
    web.deployer.hold["4242"] = asyncio.Event()  # held in "starting" until released
    async with browser(web) as http:
        await sign_in(web, http)
        async with http.get(f"{VIS}/events") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            seen: list[str] = []
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                async for body in sse_events(stream, "mine"):
                    phases = [v["progress"]["label"] for v in body["visualizations"]]
                    if not body["visualizations"] and not seen:
                        async with http.post(VIS, json={"task_id": "4242"},
                                             headers={"X-CSRF-Token": await csrf(http)}):
                            pass
                        seen.append("empty")
                        continue
                    seen.extend(p for p in phases if not seen or seen[-1] != p)
                    if phases == ["Waiting for the UI to answer"]:
                        web.deployer.hold["4242"].set()
                    if phases == ["Ready"]:
                        (entry,) = body["visualizations"]
                        assert entry["url"] and entry["seconds_left"] > 0
                        break
    assert seen[0] == "empty" and seen[-2:] == ["Waiting for the UI to answer", "Ready"]


async def sse_events(resp: aiohttp.ClientResponse, name: str) -> AsyncIterator[dict[str, Any]]:
    async for _, body in sse(resp, name):
        yield body


# --- the permalink behind the login -------------------------------------------------------


async def test_the_permalink_sends_a_stranger_to_sign_in_and_checks_the_owner(
    web: Site,
) -> None:
    async with browser(web) as http:
        async with http.post(PERMALINK + "/start", allow_redirects=False,
                             headers={"Referer": web.url + PERMALINK + "?ttl=1h"}) as resp:
            assert resp.status == 303
            login = urlsplit(resp.headers["Location"])
        assert parse_qs(login.query)["next"] == [PERMALINK + "?ttl=1h"]

        web.issuer.user = {"sub": "john", "name": "john smith", "groups": ["atlas"]}
        await sign_in(web, http, PERMALINK)
        async with http.post(PERMALINK + "/start") as resp:
            html = await resp.text()
        assert "Cannot start a visualization" in html
        assert f"{JOHN} may not change the mlflow visualization of task 4242" in html
        assert await web.agent.ledger.list() == []

    async with browser(web) as http:
        web.issuer.user = {"sub": "jane", "name": "Jane Doe", "groups": ["atlas"]}
        await sign_in(web, http, PERMALINK)
        async with http.post(PERMALINK + "/start", data={"ttl": "1h"},
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303
        inst = await web.until("4242", {Phase.READY})
        assert inst.requested_by == JANE and inst.origin == "permalink"
        await web.agent.teardown(inst.key)
        await web.until("4242", {Phase.EXPIRED})
        async with http.post(PERMALINK + "/relaunch", allow_redirects=False) as resp:
            assert resp.status == 303
        again = await web.until("4242", {Phase.READY})
        assert again.attempt == 2
    trail = [(a.actor, a.action) for a in await web.agent.ledger.actions(inst.key)]
    assert trail == [(JANE, "start"), ("system", "stop"), (JANE, "relaunch")]


async def test_a_stranger_cannot_relaunch_anothers_permalink(web: Site) -> None:
    status = await _start_as(web, JANE)
    assert status == 201
    inst = await web.until("4242", {Phase.READY})
    await web.agent.teardown(inst.key)
    await web.until("4242", {Phase.EXPIRED})
    async with browser(web) as http:
        web.issuer.user = {"sub": "john", "name": "John Smith", "groups": ["atlas"]}
        await sign_in(web, http, PERMALINK)
        async with http.post(PERMALINK + "/relaunch", allow_redirects=False) as resp:
            assert resp.status == 403
            assert f"{JOHN} may not change" in await resp.text()
    assert (await web.agent.ledger.get(inst.key)).phase is Phase.EXPIRED  # type: ignore[union-attr]


async def _start_as(web: Site, user: str) -> int:
    async with web.http.post(VIS, json={"task_id": "4242"}, headers=web.as_user(user)) as resp:
        return resp.status


# --- the iDDS VisualizationWork's reads ---------------------------------------------------


async def test_the_idds_work_reads_with_the_token_from_its_file(
    web: Site, tmp_path: Path
) -> None:
    assert await _start_as(web, JANE) == 201
    token_file = tmp_path / "idds-vis.token"
    env = {"IDDS_VIS_BROKERS": "127.0.0.1:1", "IDDS_VIS_API": web.url}
    without = AgentEndpoint.from_env(env)
    with pytest.raises(ChannelError, match="needs an identity: no token was sent"):
        await asyncio.to_thread(task_status, without, "4242")
    endpoint = AgentEndpoint.from_env({**env, "IDDS_VIS_TOKEN_FILE": str(token_file)})
    token_file.write_text(web.issuer.robot_token() + "\n")
    answer = await asyncio.to_thread(task_status, endpoint, "4242")
    assert answer is not None and answer["task_id"] == "4242"
    # Read at each call: a renewed (here: a forged) token is used at once.
    token_file.write_text(web.issuer.forged())
    with pytest.raises(ChannelError, match="it refused the token"):
        await asyncio.to_thread(task_status, endpoint, "4242")
