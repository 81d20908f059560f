"""The catalog's JSON API with bearer tokens from a real local OIDC issuer: the tools on offer,
starting, extending and stopping, who may do it, what each refusal says, the audit trail, and
the tokens that are refused. The agent runs with stand-in stager and deployer; everything else
(web app, issuer, SQLite ledger) is real, on loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from idds_vis.domain.models import InstanceKey
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import AUDIENCE, ROBOT_ID, ROBOT_SECRET, Issuer, running_issuer

VIS = "/api/v1/visualizations"


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


@pytest_asyncio.fixture
async def web(tmp_path: Path, issuer: Issuer) -> AsyncIterator[Site]:
    async with site(tmp_path, issuer) as running:
        yield running


async def post(web: Site, path: str, headers: dict[str, str], **body: Any
               ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    async with web.http.post(path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def get(web: Site, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    async with web.http.get(path, headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None)


async def ready(web: Site, task_id: str, who: dict[str, str], ttl: str = "2h") -> None:
    status, _ = await post(web, VIS, who, task_id=task_id, ttl=ttl)
    assert status == 201
    await web.until(task_id, {Phase.READY})


# --- the catalog --------------------------------------------------------------------------


async def test_the_catalog_offers_its_tools_with_their_ttls(web: Site) -> None:
    status, body = await get(web, "/api/v1/catalog", web.as_user(JANE))
    assert status == 200
    assert body["tools"] == [{"tool": "mlflow", "label": "MLflow", "default_ttl": "2h",
                              "default_ttl_seconds": 7200, "max_ttl": "2d",
                              "max_ttl_seconds": 172800}]  # fmt: skip
    assert body["identity"]["user"] == JANE and body["login"] is True
    async with web.http.get("/catalog", headers=web.as_user(JANE)) as resp:
        html = await resp.text()
    assert resp.status == 200 and "Signed in as <strong id=\"user\">Jane Doe</strong>" in html
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_the_owner_starts_follows_extends_and_stops_a_visualization(web: Site) -> None:
    jane = web.as_user(JANE)
    status, body = await post(web, VIS, jane, task_id="4242", tool="mlflow", ttl="3h")
    assert status == 201
    assert body["instance"]["phase"] == "requested" and body["instance"]["requested_by"] == JANE
    inst = await web.until("4242", {Phase.READY})
    assert inst.ttl == timedelta(hours=3) and inst.origin == "catalog"

    # Asking again returns the live one.
    status, body = await post(web, VIS, jane, task_id="4242")
    assert (status, body["instance"]["phase"]) == (200, "ready")

    status, mine = await get(web, VIS, jane)
    (entry,) = mine["visualizations"]
    assert entry["url"] == f"http://ui.example{inst.prefix}/"
    assert await get(web, f"{VIS}/4242/mlflow", jane) == (200, {"instance": entry})
    # Another user does not read her UI's record (issue 17: it carries the URL).
    assert (await get(web, f"{VIS}/4242/mlflow", web.as_user(JOHN)))[0] == 403
    assert (await get(web, f"{VIS}/4243/mlflow", jane))[0] == 404
    assert entry["progress"] == {"step": 6, "of": 6, "label": "Ready"}
    assert 3 * 3600 - 60 < entry["seconds_left"] <= 3 * 3600

    status, body = await post(web, f"{VIS}/4242/mlflow/extend", jane, by="1h")
    assert status == 200
    extended = await web.agent.ledger.get(inst.key)
    assert extended is not None and inst.expires_at is not None
    assert extended.expires_at == inst.expires_at + timedelta(hours=1)

    status, body = await post(web, f"{VIS}/4242/mlflow/stop", jane)
    assert status == 200
    await web.until("4242", {Phase.EXPIRED})
    status, mine = await get(web, VIS, jane)
    assert [v["phase"] for v in mine["visualizations"]] == ["expired"]

    # Every change is in the ledger's audit trail, with who and when.
    trail = await web.agent.ledger.actions(InstanceKey("4242"))
    assert [(a.actor, a.action) for a in trail] == [(JANE, "start"), (JANE, "extend"),
                                                    (JANE, "stop")]  # fmt: skip
    assert all(a.at.tzinfo is not None for a in trail)


async def test_another_user_gets_403_for_start_extend_and_stop(web: Site) -> None:
    await ready(web, "4242", web.as_user(JANE))
    john = web.as_user(JOHN)
    for path, body in ((VIS, {"task_id": "4242"}), (f"{VIS}/4242/mlflow/extend", {"by": "1h"}),
                       (f"{VIS}/4242/mlflow/stop", {})):  # fmt: skip
        status, answer = await post(web, path, john, **body)
        assert status == 403, path
        assert answer["error"].startswith(f"{JOHN} may not change the mlflow visualization of "
                                          f"task 4242: it is {JANE}'s task")  # fmt: skip
    inst = await web.agent.ledger.get(InstanceKey("4242"))
    assert inst is not None and inst.phase is Phase.READY
    assert [a.actor for a in await web.agent.ledger.actions(InstanceKey("4242"))] == [JANE]


async def test_tool_group_members_and_production_may_act_on_any_task(web: Site) -> None:
    await ready(web, "4242", web.as_user(JANE))
    helper = web.as_user("Helen Help", groups=["atlas", "/atlas/ml-support"])
    status, _ = await post(web, f"{VIS}/4242/mlflow/extend", helper, by="30m")
    assert status == 200

    # A robot (client credentials from the issuer) acts for the production role.
    async with aiohttp.ClientSession() as raw:
        form = {"grant_type": "client_credentials", "client_id": ROBOT_ID,
                "client_secret": ROBOT_SECRET}  # fmt: skip
        async with raw.post(f"{web.issuer.url}/token", data=form) as resp:
            robot_token = (await resp.json())["access_token"]
    robot = web.bearer(robot_token)
    status, me = await get(web, "/api/v1/me", robot)
    assert me["identity"]["user"] == f"robot {ROBOT_ID}" and me["identity"]["production"]
    status, body = await post(web, VIS, robot, task_id="5151")
    assert status == 201 and body["instance"]["requested_by"] == f"robot {ROBOT_ID}"
    status, _ = await post(web, f"{VIS}/4242/mlflow/stop", robot)
    assert status == 200
    trail = [(a.actor, a.action) for a in await web.agent.ledger.actions(InstanceKey("4242"))]
    assert trail == [(JANE, "start"), ("Helen Help", "extend"), (f"robot {ROBOT_ID}", "stop")]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"task_id": "4242", "ttl": "3d"}, 400, "TTL 3d is over the MLflow maximum of 2d"),
        ({"task_id": "4242", "ttl": "soon"}, 400,
         "cannot read duration 'soon': write it like 24h, 90m, 1h30m or 60s"),
        ({"task_id": "4242", "tool": "tensorboard"}, 400,
         "unknown tool 'tensorboard': this catalog offers mlflow"),
        ({"task_id": "9999"}, 404, "PanDA has no task 9999"),
        ({"task_id": "6000"}, 400,
         "task 6000 is running: its results can be shown once it has finished"),
        ({}, 404, "say which task: task_id is missing"),
    ],
)  # fmt: skip
async def test_refused_starts_say_why_and_make_no_record(
    web: Site, body: dict[str, str], status: int, error: str
) -> None:
    assert await post(web, VIS, web.as_user(JANE), **body) == (status, {"error": error})
    assert await web.agent.ledger.list() == []


async def test_extending_past_the_tools_maximum_is_a_clear_error(web: Site) -> None:
    await ready(web, "4242", web.as_user(JANE), ttl="1d")
    status, body = await post(web, f"{VIS}/4242/mlflow/extend", web.as_user(JANE), by="2d")
    assert status == 400
    # "at most" is what is left of the 2 days, to the minute: 1 day less the seconds spent.
    assert re.fullmatch("extending by 2d goes over the MLflow maximum lifetime of 2d: extend "
                        "by at most (1d|23h59m)", body["error"])  # fmt: skip
    inst = await web.agent.ledger.get(InstanceKey("4242"))
    assert inst is not None and inst.expires_at is not None
    assert [a.action for a in await web.agent.ledger.actions(InstanceKey("4242"))] == ["start"]


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: i.token(exp=1_000_000_000, iat=999_990_000, nbf=999_990_000),
         "the token has expired"),
        (lambda i: i.forged(), "the token's signature does not verify"),
        (lambda i: i.token(aud="https://someone-else.example.org"),
         "the token is for another audience"),
        (lambda i: i.unsigned(), "algorithm 'none' is not accepted (signed tokens only)"),
        (lambda i: i.token(nbf=4_000_000_000),
         "the token is not valid yet (nbf/iat in the future)"),
        (lambda i: i.token(iss="https://evil.example.org"), "the token is from another issuer"),
        (lambda i: "not-a-jwt", "not a JSON Web Token"),
    ],
    ids=["expired", "forged", "wrong-audience", "alg-none", "not-yet-valid", "wrong-issuer",
         "garbage"],
)  # fmt: skip
async def test_bad_tokens_are_refused(web: Site, make: Any, reason: str) -> None:
    headers = web.bearer(make(web.issuer))
    for method, path in (("POST", VIS), ("GET", "/api/v1/tasks/4242"), ("GET", "/api/v1/me")):
        async with web.http.request(method, path, json={"task_id": "4242"},
                                    headers=headers) as resp:  # fmt: skip
            assert resp.status == 401, (method, path)
            assert (await resp.json())["error"] == f"token refused: {reason}"
            assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert await web.agent.ledger.list() == []


async def test_reads_need_an_identity_like_pandas_do(web: Site) -> None:
    await ready(web, "4242", web.as_user(JANE))
    status, body = await get(web, "/api/v1/tasks/4242")
    assert status == 401 and body["error"] == "sign in to idds-vis to see this task's " \
                                              "visualizations"  # fmt: skip
    status, body = await get(web, "/api/v1/tasks/4242", web.as_user(JOHN))
    assert status == 200 and body["instances"][0]["phase"] == "ready"
    status, _ = await get(web, "/api/v1/capacity")
    assert status == 401
    async with web.http.get("/t/user.jdoe.mnist%2F/mlflow", allow_redirects=False) as resp:
        assert resp.status == 303
        login = urlsplit(resp.headers["Location"])
        assert login.path == "/auth/login"
        assert parse_qs(login.query) == {"next": ["/t/user.jdoe.mnist%2F/mlflow"]}


async def test_the_monitor_json_can_stay_public_for_the_bigpanda_snippet(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer, public_task_json=True) as web:
        await ready(web, "4242", web.as_user(JANE))
        status, body = await get(web, "/api/v1/tasks/4242")
        assert status == 200 and body["instances"][0]["phase"] == "ready"
        assert (await get(web, VIS))[0] == 401  # only the monitor's JSON is public


async def test_reads_can_stay_open_while_changes_need_a_sign_in(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with site(tmp_path, issuer, auth_required_for_reads=False) as web:
        await ready(web, "4242", web.as_user(JANE))
        assert (await get(web, "/api/v1/tasks/4242"))[0] == 200
        status, body = await get(web, "/api/v1/capacity")
        assert status == 200 and body["total"]["used"] == 1 and "user" not in body
        status, body = await post(web, f"{VIS}/4242/mlflow/stop", {"Origin": web.url})
        assert status == 401 and body["login_url"].startswith("/auth/login?next=")


async def test_wlcg_profile_groups_come_from_wlcg_groups(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer, oidc_jwt_profile="wlcg") as web:
        await ready(web, "4242", web.as_user(JANE))
        token = issuer.token(sub="helen", name="Helen Help", groups=None,
                             **{"wlcg.groups": ["/atlas", "/atlas/ml-support"]})  # fmt: skip
        status, me = await get(web, "/api/v1/me", web.bearer(token))
        assert me["identity"]["groups"] == ["atlas", "atlas/ml-support"]
        status, _ = await post(web, f"{VIS}/4242/mlflow/stop", web.bearer(token))
        assert status == 200


async def test_bursts_are_rate_limited_per_identity(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer, rate_limit="5/minute") as web:
        jane, john = web.as_user(JANE), web.as_user(JOHN)
        statuses = [(await get(web, "/api/v1/catalog", jane))[0] for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        async with web.http.get("/api/v1/catalog", headers=jane) as resp:
            assert resp.status == 429
            assert 0 < int(resp.headers["Retry-After"]) <= 60
            assert (await resp.json())["error"].startswith("too many requests: try again in")
        assert (await get(web, "/api/v1/catalog", john))[0] == 200  # others are not held back
        # Static files are not counted.
        async with web.http.get("/static/catalog.js", headers=jane) as resp:
            assert resp.status == 200


async def test_login_off_keeps_the_old_behaviour(tmp_path: Path, issuer: Issuer) -> None:
    async with site(tmp_path, issuer, oidc_issuer=None) as web:
        async with web.http.get("/api/v1/tasks/4242") as resp:
            assert resp.status == 404  # public, as before: no record yet
        status, body = await post(web, VIS, web.as_user(JANE), task_id="4242")
        assert status == 401 and body["error"].startswith("sign in first")
        async with web.http.get("/catalog") as resp:
            assert "Sign-in is not configured" in await resp.text()


async def test_concurrent_starts_of_one_task_make_one_record(web: Site) -> None:
    jane = web.as_user(JANE)
    results = await asyncio.gather(*(post(web, VIS, jane, task_id="4242") for _ in range(5)))
    assert sorted(status for status, _ in results) == [200, 200, 200, 200, 201]
    assert len(await web.agent.ledger.list()) == 1
    assert AUDIENCE  # the tokens were for the app's audience
