"""Ready means reachable: each way a UI can be up yet useless is caught, with a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.errors import NotReachable
from idds_vis.domain.models import Deployment

PREFIX = "/vis/mlflow-1-abcdef12/"
INDEX = '<html><script defer="defer" src="static-files/static/js/main.js"></script></html>'


def mlflow_like(
    index: str = INDEX,
    asset_status: int = 200,
    experiments: list[str] | None = None,
    host: str | None = None,
) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        if host and request.host != host:
            return web.Response(status=403, text="Invalid Host header")
        return web.Response(text=index, content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        return web.Response(status=asset_status, text="js")

    async def search(request: web.Request) -> web.Response:
        names = ["Default"] if experiments is None else experiments
        return web.json_response({"experiments": [{"name": n} for n in names]})

    app = web.Application()
    app.router.add_get(PREFIX, page)
    app.router.add_get(PREFIX + "static-files/static/js/main.js", asset)
    app.router.add_post(PREFIX + "ajax-api/2.0/mlflow/experiments/search", search)
    return app


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> Deployment:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}{PREFIX}"
        return Deployment(url=url, health_url=url + "health")

    yield start
    for runner in runners:
        await runner.cleanup()


probe = HttpReadinessProbe(attempts=2, interval=0)


async def test_a_complete_ui_is_ready(serve) -> None:
    deployment = await serve(mlflow_like(experiments=["Default", "training"]))
    await probe.verify(deployment, ("training",))


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        (lambda: mlflow_like(index="<html>no scripts</html>"), "names no script asset"),
        (lambda: mlflow_like(asset_status=404), "UI asset at http"),
        (lambda: mlflow_like(experiments=["Default"]), "does not list the staged experiment"),
        (lambda: mlflow_like(host="vis.example.org"), "UI page at http"),
    ],
)
async def test_a_useless_ui_is_not_ready(serve, app, reason: str) -> None:
    deployment = await serve(app())
    with pytest.raises(NotReachable, match=reason):
        await probe.verify(deployment, ("training",))


async def test_nothing_listening_is_not_ready() -> None:
    dead = Deployment(url="http://127.0.0.1:9/vis/x/", health_url="http://127.0.0.1:9/vis/x/health")
    with pytest.raises(NotReachable, match="unreachable"):
        await probe.verify(dead, ())
