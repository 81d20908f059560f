"""Issue 17: idds-vis's own cookies (the web app's session and a share link's token) never
reach MLflow. On Kubernetes the ingress passes the visitor's cookies to the UI's pod: the UI's
gate (``ui/readonly_gate.py``) strips them before MLflow's app. On the local deployer the web
app's proxy passes no cookie at all to the UI process (``api/routes/ui_proxy.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from idds_vis.api import serving
from idds_vis.api.auth import sessions, share_links
from idds_vis.api.routes import ui_proxy
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ui.readonly_gate import OWN_COOKIES, ReadOnlyGate
from tests.catalog_support import JOHN, site
from tests.fakes import FakeDeployer
from tests.oidc_issuer import Issuer, running_issuer

PREFIX = "/vis/mlflow-42-abcdef12"
VISITOR = (b"theme=dark; idds_vis_session=gAAAAsession; idds_vis_share=eyJ.token.sig; "
           b"_ga=GA1.2")  # fmt: skip


def test_the_gate_names_the_web_apps_cookies() -> None:
    assert {sessions.COOKIE.encode(), share_links.COOKIE.encode()} == OWN_COOKIES


class MlflowStandIn:
    """Where MLflow's ASGI app sits behind the gate: records what it is given."""

    def __init__(self) -> None:
        self.cookies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.cookies += [v for k, v in scope["headers"] if k.lower() == b"cookie"]
        body = b"<html><head></head><body></body></html>"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    "path",
    [
        PREFIX + "/",
        PREFIX + "/ajax-api/2.0/mlflow/experiments/search",
        PREFIX + "/idds-vis/landing.js",
    ],
)
def test_the_ui_gate_strips_them_before_mlflow(path: str) -> None:
    mlflow = MlflowStandIn()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    headers = [(b"cookie", VISITOR), (b"Cookie", b"idds_vis_share=second"), (b"accept", b"*/*")]
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
             "headers": headers}  # fmt: skip
    asyncio.run(ReadOnlyGate(mlflow, PREFIX)(scope, receive, send))
    if path.endswith("landing.js"):  # the gate's own search, made on the page's behalf
        assert mlflow.cookies == []
    else:
        assert mlflow.cookies == [b"theme=dark; _ga=GA1.2"]  # the second header went: empty
    assert scope["headers"] == headers  # the caller's scope is not changed


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in UI process on loopback: records the Cookie headers the proxy sends it."""
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        seen.extend(request.headers.getall("Cookie", []))
        return web.Response(text="mlflow")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with serving(app, "127.0.0.1", 0) as url:
        yield url.rstrip("/"), seen


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def test_the_local_proxy_passes_no_cookie_to_the_ui(
    tmp_path: Path, issuer: Issuer, upstream: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    origin, seen = upstream
    monkeypatch.setattr(ui_proxy, "LocalProcessDeployer", FakeDeployer)  # it proxies these

    async def to_stand_in(inst: Any) -> tuple[str, dict[str, str]]:
        return origin, {"X-Idds-Vis-Proxy": "secret"}

    async with site(tmp_path, issuer) as web_site:
        monkeypatch.setattr(web_site.deployer, "upstream", to_stand_in, raising=False)
        inst, _ = await web_site.agent.submit(VisRequest("5151", source="file:///outputs/5151"))
        inst = await web_site.until("5151", {Phase.READY})
        headers = {**web_site.as_user(JOHN), "Cookie": VISITOR.decode()}
        async with web_site.http.get(f"/vis/{inst.path_token}/", headers=headers) as resp:
            assert (resp.status, await resp.text()) == (200, "mlflow")
    assert seen == []
