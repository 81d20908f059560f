"""The idds-vis web app: permalink pages, the monitor's JSON and snippet, static files.

Routes are grouped by module (``idds_vis.api.routes``); cross-cutting rules are middlewares, so
login (issue 6) is one more middleware and /metrics, /healthz, /readyz (issue 7) one more module.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from idds_vis.agent.service import Agent
from idds_vis.api.catalog import setup as self_service
from idds_vis.api.catalog.tasks import TaskDirectory
from idds_vis.api.keys import AGENT, POLL_INTERVAL, REFUSALS, SETTINGS, STARTER, STREAMS
from idds_vis.api.refusals import Refusals
from idds_vis.api.routes import assets, auth_check, monitor, permalink, shares, ui_proxy
from idds_vis.api.routes import health as health_routes
from idds_vis.api.security import page_headers, same_origin
from idds_vis.api.starter import Starter
from idds_vis.api.task_feed import FEED, TaskFeed
from idds_vis.api.urls import root
from idds_vis.runtime.config import Settings


def make_app(
    agent: Agent,
    settings: Settings,
    starter: Starter,
    *,
    poll_interval: float = 1.0,
    directory: TaskDirectory | None = None,
) -> web.Application:
    """``directory`` finds a task's owner for the catalog (PanDA's, in the wiring)."""
    app = web.Application(middlewares=[page_headers, same_origin])
    app[AGENT] = agent
    app[SETTINGS] = settings
    app[STARTER] = starter
    app[REFUSALS] = Refusals()
    app[POLL_INTERVAL] = poll_interval
    streams: set[asyncio.Task[Any]] = set()
    app[STREAMS] = streams
    app[FEED] = TaskFeed(agent, poll_interval)  # one ledger watch per followed permalink
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("idds_vis.api", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    # Login, the catalog and the quotas; their guarded permalink relaunch routes first.
    self_service.install(app, agent, settings, starter, directory)
    for module in (permalink, monitor, assets):
        app.add_routes(module.routes)
    # Issue 17: who may see a UI (forward-auth for an ingress) and the local UIs' proxy.
    app.add_routes(auth_check.routes)
    ui_proxy.install(app)
    shares.install(app)  # share links and visibility changes (issue 17)
    app.on_shutdown.append(_end_streams)
    # Probes and metrics for operators (no login: probes and Prometheus carry no identity).
    app.add_routes(health_routes.routes)
    app.cleanup_ctx.append(health_routes.heartbeat)
    app.middlewares.append(not_found)  # innermost: it sees the router's own 404 first
    return app


PATH_SHOWN = 200  # characters of an unknown path shown back (escaped) on the 404 page


@web.middleware
async def not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path no route knows: a page in the app's style for browsers, JSON under ``/api/``
    (issue 19), instead of aiohttp's bare "404: Not Found". A handler's own 404 (no such UI,
    no such task) keeps its words. The path is shown escaped (the template's autoescape) and
    cut short; the JSON names none."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if getattr(request.match_info, "http_exception", None) is None:
            raise  # a route's own 404
    if request.path == "/api" or request.path.startswith("/api/"):
        return web.json_response({"error": "no such API endpoint"}, status=404,
                                 headers={"Cache-Control": "no-store"})  # fmt: skip
    path = request.path if len(request.path) <= PATH_SHOWN else request.path[:PATH_SHOWN] + "…"
    return aiohttp_jinja2.render_template("not_found.html", request,
                                          {"root": root(request), "path": path},
                                          status=404)  # fmt: skip


async def _end_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    for task in tuple(streams):
        task.cancel()
    await app[FEED].close()
