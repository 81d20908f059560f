"""Issue 17 on Kubernetes: the nginx ingress asks the web app's ``GET /auth/check`` before it
serves a UI (forward-auth). Its contract: the visitor's cookie or bearer token and the original
URI come in headers; 2xx lets the request through, 401 sends the browser to sign in (the
``auth-signin`` annotation), 403 refuses; anything else is a 500 at nginx, so a missing URI is
400. And each UI's Ingress carries the annotations, valid for the API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest_asyncio

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.naming import instance_name
from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, Site, site
from tests.oidc_issuer import running_issuer

CHECK = "/auth/check"


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_issuer() as issuer, site(tmp_path, issuer) as running:
        yield running


async def janes_ui(web: Site) -> Instance:
    async with web.http.post("/api/v1/visualizations", json={"task_id": "4242"},
                             headers=web.as_user(JANE)) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
    inst = await web.until("4242", {Phase.READY})
    assert inst.path_token is not None
    return inst


async def test_the_auth_endpoint_answers_as_nginx_expects(web: Site) -> None:
    inst = await janes_ui(web)
    asset = f"{inst.prefix}/static-files/main.js?x=1"
    cases = [
        ({"X-Original-URI": asset, **web.as_user(JANE)}, 204),  # the owner
        ({"X-Original-URI": asset, **web.as_user(JOHN, groups=["cms"])}, 403),  # another user
        ({"X-Original-URI": asset, **web.as_user(JOHN, groups=["atlas/ml-support"])}, 204),
        ({"X-Original-URI": asset, **web.as_user("Pat Prod", groups=["atlas/production"])}, 204),
        ({"X-Original-URI": asset}, 401),  # nobody signed in: nginx sends to auth-signin
        ({"X-Original-URL": f"https://vis.example.org{asset}", **web.as_user(JANE)}, 204),
        # The name-derived path of before is no UI: it cannot be computed from the task id.
        ({"X-Original-URI": f"/vis/{instance_name('4242', 'mlflow')}/", **web.as_user(JANE)},
         403),
        ({"X-Original-URI": "/vis/mlflow-" + "0" * 32 + "/", **web.as_user(JANE)}, 403),
        ({**web.as_user(JANE)}, 400),  # no original URI: not a forward-auth call
        ({"X-Original-URI": "/catalog", **web.as_user(JANE)}, 400),
    ]  # fmt: skip
    for headers, status in cases:
        async with web.http.get(CHECK, headers=headers) as resp:
            assert resp.status == status, (headers.get("X-Original-URI"), await resp.text())
            assert resp.headers["Cache-Control"] == "no-store"
    async with web.http.get(CHECK, headers={"X-Original-URI": asset}) as resp:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with web.http.get("/metrics") as resp:
        metrics = await resp.text()
    assert 'idds_vis_ui_access_denied_total{reason="not_shared"} 1.0' in metrics
    assert 'idds_vis_ui_access_denied_total{reason="anonymous"} 2.0' in metrics
    assert 'idds_vis_ui_access_denied_total{reason="unknown_instance"} 2.0' in metrics


async def test_visibility_shares_with_groups_and_signed_in_people(web: Site) -> None:
    inst = await janes_ui(web)
    john = {"X-Original-URI": f"{inst.prefix}/", **web.as_user(JOHN, groups=["cms"])}
    anonymous = {"X-Original-URI": f"{inst.prefix}/"}
    now = web.agent.clock.now()
    ledger = web.agent.ledger
    for visibility, john_status, anonymous_status in [
        ("private", 403, 401), ("groups:cms", 204, 401), ("groups:/atlas", 403, 401),
        ("signed-in", 204, 401), ("public", 403, 401),  # public is off unless the operator allows
    ]:  # fmt: skip
        await ledger.set_visibility(inst.key, visibility, now)  # type: ignore[attr-defined]
        async with web.http.get(CHECK, headers=john) as resp:
            assert resp.status == john_status, visibility
        async with web.http.get(CHECK, headers=anonymous) as resp:
            assert resp.status == anonymous_status, visibility


async def test_the_record_api_answers_403_to_another_user(web: Site) -> None:
    inst = await janes_ui(web)
    one = "/api/v1/visualizations/4242/mlflow"
    async with web.http.get(one, headers=web.as_user(JOHN, groups=["cms"])) as resp:
        assert resp.status == 403
        assert inst.prefix not in await resp.text()
    async with web.http.get(one, headers=web.as_user(JANE)) as resp:
        assert resp.status == 200
        assert (await resp.json())["instance"]["url"].endswith(f"{inst.prefix}/")


def _instance() -> Instance:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    key = InstanceKey("4242")
    return Instance(task_id="4242", tool="mlflow", name=key.name, phase=Phase.DEPLOYING,
                    source="https://bigpanda.example/x", ttl=timedelta(hours=1), created_at=now,
                    updated_at=now, path_token="mlflow-" + "ab" * 16)  # fmt: skip


def test_each_ui_ingress_asks_the_web_app_first() -> None:
    inst = _instance()
    ks = KubeSettings(namespace="vis", public_host="vis.example.org",
                      web_url="https://vis.example.org/")  # fmt: skip
    root = objects.deployment(inst, ks, inst.source or "", None, secret=False)
    root["metadata"]["uid"] = "8d3e9f0a-0000-4000-8000-000000000001"
    ingress = next(o for o in objects.dependents(inst, ks, root, {}) if o["kind"] == "Ingress")
    kubernetes_validate.validate(ingress, "1.33", strict=True)
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/auth-url"] == "https://vis.example.org/auth/check"
    signin = urlsplit(notes["nginx.ingress.kubernetes.io/auth-signin"])
    assert (signin.netloc, signin.path) == ("vis.example.org", "/auth/login")
    assert parse_qs(signin.query)["next"] == [f"{inst.prefix}/"]  # back to the UI
    assert notes["nginx.ingress.kubernetes.io/auth-signin-redirect-param"] == "next"
    # The Ingress routes the random path, not one made of the task id.
    paths = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == ["/vis/mlflow-" + "ab" * 16]
    # Without a web app, no forward-auth (and nothing to sign in at).
    bare = KubeSettings(namespace="vis")
    plain = next(o for o in objects.dependents(inst, bare, root, {}) if o["kind"] == "Ingress")
    assert not any(k.startswith("nginx.ingress") for k in plain["metadata"].get("annotations",
                                                                                 {}))  # fmt: skip
