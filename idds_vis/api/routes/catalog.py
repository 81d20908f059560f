"""The self-service catalog: its page and its JSON API (every action the page offers).

- ``GET /catalog``: the page (tools, capacity, "my visualizations", start/extend/stop).
- ``GET /api/v1/catalog``: the tools on offer with their default and maximum TTL, the caller.
- ``GET /api/v1/capacity``: used and free slots, overall and the caller's.
- ``GET /api/v1/visualizations``: the caller's visualizations (phase, URL, expiry, progress)
  and queued requests (with their queue position); ``.../events`` streams it (SSE): one
  shared ledger watch per person, each stream ends after ``stream_lifetime``, capped per
  client and in all by ``authenticate``.
- ``POST /api/v1/visualizations`` ``{task_id, tool, ttl}``: start; 201 started, 200 already
  live, 202 queued (over a quota), 403 not the owner's, a group's or production's.
- ``POST /api/v1/visualizations/{task_id}/{tool}/extend`` ``{by}`` and ``.../stop``.

Requests take JSON or a form. Changes need a signed-in identity (bearer token, or the session
with its CSRF token); reads an identity too when ``reads_need_identity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.middleware import identity, require, unauthorized
from idds_vis.api.auth.sessions import csrf_token
from idds_vis.api.catalog.service import CATALOG
from idds_vis.api.fields import request_fields
from idds_vis.api.keys import AGENT, POLL_INTERVAL, SETTINGS, STREAMS
from idds_vis.api.routes.auth_check import decide
from idds_vis.api.task_feed import FEED, Mine
from idds_vis.api.urls import absolute_permalink, root
from idds_vis.api.views import STEPS, instance_json, scrub_paths
from idds_vis.domain.errors import InvalidTransition, NotFound, SourceUnreachable, VisError
from idds_vis.domain.identity import Forbidden, Identity
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.domain.quotas import Waiting

routes = web.RouteTableDef()
ONE = "/api/v1/visualizations/{task_id:[^/]+}/{tool:[a-z0-9-]+}"
NO_STORE = {"Cache-Control": "no-store"}
_LATER = {Phase.EXPIRING: "Shutting down", Phase.EXPIRED: "Expired", Phase.FAILED: "Failed"}


def _status(error: VisError) -> int:
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, SourceUnreachable):
        return 503
    if isinstance(error, InvalidTransition):
        return 409
    return 400


def _refused(error: VisError) -> web.Response:
    # A reason may name a server path (a source that cannot be read): never on a page (issue 19).
    return web.json_response({"error": scrub_paths(error.reason)}, status=_status(error),
                             headers=NO_STORE)  # fmt: skip


def _reader(request: web.Request) -> Identity | None:
    """Reads need an identity when configured so (as PanDA's do)."""
    if request.app[AUTH].reads_need_identity:
        return require(request)
    return identity(request)


def entry(request: web.Request, inst: Instance, now: datetime) -> dict[str, Any]:
    """One visualization in the catalog's JSON: the monitor's fields and what the page shows."""
    link = absolute_permalink(request, inst.task_name, inst.tool) if inst.task_name else None
    body = instance_json(inst, link)
    order = [phase for phase, _ in STEPS]
    step = order.index(inst.phase) + 1 if inst.phase in order else len(order)
    label = dict(STEPS).get(inst.phase) or _LATER.get(inst.phase, inst.phase.value)
    left = None
    if inst.phase is Phase.READY and inst.expires_at is not None:
        left = max(0, int((inst.expires_at - now).total_seconds()))
    progress = {"step": step, "of": len(order), "label": label}
    body.update(task_id=inst.task_id, task_name=inst.task_name, requested_by=inst.requested_by,
                seconds_left=left, progress=progress)  # fmt: skip
    return body


async def _mine(request: web.Request, who: Identity) -> dict[str, Any]:
    return _listing(request, *await request.app[CATALOG].mine(who))


def _listing(request: web.Request, instances: list[Instance], queued: list[Waiting]
             ) -> dict[str, Any]:  # fmt: skip
    now = request.app[AGENT].clock.now()
    return {
        "visualizations": [entry(request, inst, now) for inst in instances],
        "queued": [w.as_json() for w in queued],
        "now": now.isoformat(),
    }


def _key(request: web.Request) -> InstanceKey:
    return InstanceKey(request.match_info["task_id"], request.match_info["tool"])


# -- the page -------------------------------------------------------------------------------
@routes.get("/catalog")
async def page(request: web.Request) -> web.StreamResponse:
    config = request.app[AUTH]
    who = identity(request)
    context = {
        "root": root(request),
        "identity": who,
        "login": config.login,
        "login_url": f"{root(request)}/auth/login?next={root(request)}/catalog",
        "csrf": await csrf_token(request) if who is not None and config.login else "",
        "tools": [offer.as_json() for offer in request.app[CATALOG].tools.values()],
    }
    response = aiohttp_jinja2.render_template("catalog.html", request, context)
    response.headers.update(NO_STORE)
    return response


# -- reads --------------------------------------------------------------------------------
@routes.get("/api/v1/catalog")
async def tools(request: web.Request) -> web.Response:
    who = _reader(request)
    body = {
        "tools": [offer.as_json() for offer in request.app[CATALOG].tools.values()],
        "identity": who.as_json() if who else None,
        "login": request.app[AUTH].login,
    }
    return web.json_response(body, headers=NO_STORE)


@routes.get("/api/v1/capacity")
async def capacity(request: web.Request) -> web.Response:
    who = _reader(request)
    queue = request.app[CATALOG].queue
    body = await queue.capacity(who.user if who else None, who.groups if who else ())
    return web.json_response(body, headers=NO_STORE)


@routes.get("/api/v1/visualizations")
async def mine(request: web.Request) -> web.Response:
    return web.json_response(await _mine(request, require(request)), headers=NO_STORE)


@routes.get(ONE)
async def one(request: web.Request) -> web.Response:
    _reader(request)
    key = _key(request)
    inst = await request.app[AGENT].ledger.get(key)
    queued = [w for w in await request.app[CATALOG].queue.queue()
              if (w.task_id, w.tool) == (key.task_id, key.tool)]  # fmt: skip
    if queued:
        return web.json_response({"queued": queued[0].as_json()}, headers=NO_STORE)
    if inst is None:
        return _refused(NotFound(f"no visualization of task {key.task_id} ({key.tool})"))
    # The record carries the UI's URL: only those the UI is for may read it (issue 17).
    decision = await decide(request, inst)
    if not decision.allowed:
        if decision.needs_sign_in:
            raise unauthorized(request, decision.detail)
        return _refused(Forbidden(decision.detail))
    now = request.app[AGENT].clock.now()
    return web.json_response({"instance": entry(request, inst, now)}, headers=NO_STORE)


@routes.get("/api/v1/visualizations/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The caller's list, sent again whenever one of its records changes: the page's progress.

    Every stream of one person shares one ledger watch (``task_feed.follow_mine``: one read per
    change or poll interval, however many tabs), and each ends after ``stream_lifetime`` (up to
    a fifth sooner, so tabs opened together do not all come back at once); the page's
    EventSource reconnects and gets the list at once. ``authenticate`` caps how many are open.
    """
    who = identity(request)
    if who is None:
        raise unauthorized(request, "sign in to follow your visualizations")
    catalog = request.app[CATALOG]
    streams = request.app[STREAMS]
    this = asyncio.current_task()
    assert this is not None
    streams.add(this)  # cancelled at shutdown: the page may stay open for days
    lifetime = request.app[SETTINGS].stream_lifetime.total_seconds() * random.uniform(0.8, 1.0)
    wake = request.app[POLL_INTERVAL]  # how soon a closed page is noticed between changes

    async def read() -> Mine:
        return await catalog.mine(who)

    try:
        async with request.app[FEED].follow_mine(who.user, read) as follower, \
                sse_response(request) as stream:  # fmt: skip
            with contextlib.suppress(ConnectionResetError, TimeoutError):  # gone, or time up
                # The first event is always sent (a loaded replica may take longer than a short
                # lifetime to read it); the stream's time counts from its opening all the same.
                deadline = asyncio.get_running_loop().time() + lifetime
                async with asyncio.timeout(deadline + lifetime) as budget:
                    while stream.is_connected() and not _gone(request):
                        mine = await follower.next(wake)
                        if mine is not None:
                            body = _listing(request, *mine)
                            await stream.send(json.dumps(body), event="mine")
                            budget.reschedule(max(deadline, asyncio.get_running_loop().time()))
        return stream
    finally:
        streams.discard(this)


def _gone(request: web.Request) -> bool:
    """The page closed its connection (noticed at the next wake, not at the next ping)."""
    transport = request.transport
    return transport is None or transport.is_closing()


# -- changes ------------------------------------------------------------------------------
@routes.post("/api/v1/visualizations")
async def start(request: web.Request) -> web.Response:
    who = require(request)
    fields = await request_fields(request)
    task_id = fields.get("task_id", "").strip()
    if not task_id:
        return _refused(NotFound("say which task: task_id is missing"))
    tool = fields.get("tool", "").strip() or "mlflow"
    catalog = request.app[CATALOG]
    try:
        admission = await catalog.start_by_id(who, task_id, tool, fields.get("ttl", "").strip())
    except VisError as exc:
        return _refused(exc)
    if admission.waiting is not None:
        return web.json_response({"queued": admission.waiting.as_json()}, status=202,
                                 headers=NO_STORE)  # fmt: skip
    assert admission.instance is not None
    now = request.app[AGENT].clock.now()
    return web.json_response({"instance": entry(request, admission.instance, now)},
                             status=201 if admission.started else 200,
                             headers=NO_STORE)  # fmt: skip


@routes.post(ONE + "/extend")
async def extend(request: web.Request) -> web.Response:
    who = require(request)
    fields = await request_fields(request)
    try:
        inst = await request.app[CATALOG].extend(who, _key(request), fields.get("by", "").strip())
    except VisError as exc:
        return _refused(exc)
    now = request.app[AGENT].clock.now()
    return web.json_response({"instance": entry(request, inst, now)}, headers=NO_STORE)


@routes.post(ONE + "/stop")
async def stop(request: web.Request) -> web.Response:
    who = require(request)
    try:
        done = await request.app[CATALOG].stop(who, _key(request))
    except VisError as exc:
        return _refused(exc)
    if isinstance(done, Waiting):
        return web.json_response({"cancelled": done.as_json()}, headers=NO_STORE)
    now = request.app[AGENT].clock.now()
    return web.json_response({"instance": entry(request, done, now)}, headers=NO_STORE)
