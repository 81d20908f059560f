"""For operators and Kubernetes probes: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` (liveness) answers 200 while the event loop is not stalled. ``/readyz``
(readiness) answers 200 when every check passes (the ledger answers, the broker is connected,
no watch has been silent past its timeout, the replica holds its membership lease), else 503
naming each failing check and why. ``/metrics`` is the agent's Prometheus exposition. None of
them needs a login, none shows a secret or a task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from idds_vis.agent.health import health_of
from idds_vis.api.keys import AGENT

routes = web.RouteTableDef()
NO_STORE = {"Cache-Control": "no-store"}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    reason = health_of(request.app[AGENT]).alive()
    if reason is not None:
        return web.json_response({"status": "stalled", "reason": reason}, status=503,
                                 headers=NO_STORE)  # fmt: skip
    return web.json_response({"status": "alive"}, headers=NO_STORE)


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    results = await health_of(request.app[AGENT]).ready()
    checks = {name: reason or "ok" for name, reason in results.items()}
    ready = all(reason is None for reason in results.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return web.json_response(body, status=200 if ready else 503, headers=NO_STORE)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[AGENT].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})


async def heartbeat(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the heartbeat ticks while the app serves."""
    beat = health_of(app[AGENT]).heartbeat
    beat.start()
    yield
    await beat.stop()
