"""The permalink: ``/t/<task name>/<tool>`` redirects to the live UI, or shows its progress
(live, over Server-Sent Events), its expiry, or why it failed with a relaunch button.

Streams of one task share one ledger watch (``task_feed``) and end after ``stream_lifetime``
(up to a fifth sooner, so pages opened together do not all come back at once); the page's
EventSource then reconnects and gets the current state at once. How many streams a client
may hold open is capped by ``authenticate`` (``auth.streams``).

Who sees the UI's URL (issue 17): it carries the instance's unguessable path, so the page (also
with ``?stay``), its stream and the redirect give it only to those ``domain.access.may_view``
lets see the UI. Others see the progress and the expiry, and are told to sign in or whom to ask.

A name of digits only also finds the record of that task id (``task_feed.current``): a UI
started from the CLI or the catalog may have no task name (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from datetime import datetime

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from idds_vis.api.auth.middleware import login_url
from idds_vis.api.catalog.service import CATALOG
from idds_vis.api.keys import AGENT, POLL_INTERVAL, REFUSALS, SETTINGS, STARTER, STREAMS
from idds_vis.api.page_state import page_state
from idds_vis.api.routes.auth_check import decide
from idds_vis.api.starter import task_id_of
from idds_vis.api.task_feed import FEED, Follower, Snapshot, current, load
from idds_vis.api.urls import permalink, root
from idds_vis.domain.access import Decision
from idds_vis.domain.errors import InvalidTransition, NotFound, SourceUnreachable, VisError
from idds_vis.domain.expiry import parse_duration
from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.permalink import TOOLS
from idds_vis.domain.phases import Phase
from idds_vis.runtime.logs import one_line

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Only known tools route here, so ".../<tool>/events" never reads as a task name ending in a tool.
# The name may hold "/" (quoted as %2F in the permalink; older aiohttp decodes it before routing).
BASE = "/t/{task_name:.+}/{tool:" + "|".join(sorted(TOOLS)) + "}"


def _names(request: web.Request) -> tuple[str, str]:
    return request.match_info["task_name"], request.match_info["tool"]


async def _current(request: web.Request, task_name: str, tool: str) -> Instance | None:
    """The newest record of that task name and tool (a resubmitted task reuses its name)."""
    return await current(request.app[AGENT], task_name, tool)


async def _load(request: web.Request, task_name: str, tool: str) -> Snapshot:
    return await load(request.app[AGENT], task_name, tool)


def _context(
    request: web.Request,
    task_name: str,
    tool: str,
    inst: Instance | None,
    history: list[PhaseEvent],
    *,
    refusal: str | None = None,
    ttl: str | None = None,
    owner: str | None = None,
    withheld: str | None = None,
) -> dict[str, object]:
    link = permalink(request, task_name, tool)
    state = page_state(task_name, tool, inst, history, _now(request), refusal=refusal, ttl=ttl,
                       withheld=withheld)  # fmt: skip
    state.update(
        root=root(request),
        owner=owner,
        permalink=permalink(request, task_name, tool, ttl, owner),
        events_url=f"{link}/events",
        start_url=f"{link}/start",
        relaunch_url=f"{link}/relaunch",
        stay="stay" in request.query,
    )
    return state


def _now(request: web.Request) -> datetime:
    return request.app[AGENT].clock.now()


async def _access(request: web.Request, inst: Instance | None, *, count: bool,
                  follower: Follower[Snapshot] | None = None) -> Decision | None:  # fmt: skip
    """The access check of a live UI (None: nothing live, no URL to give or withhold).

    In a stream (``follower``), the task's owner is looked up once per snapshot for all the
    streams of the task (``Follower.once``), not once per stream: with PanDA not knowing the
    owner, 500 open pages made 500 PanDA calls at each change."""
    if inst is None or inst.phase is not Phase.READY or not inst.url:
        return None
    if follower is None:
        return await decide(request, inst, count=count)
    catalog = request.app[CATALOG]

    async def owner_of(inst: Instance) -> str | None:
        return await follower.once(("owner", inst.key), lambda: catalog.owner(inst))

    return await decide(request, inst, count=count, owner_of=owner_of)


def _withheld(decision: Decision | None) -> str | None:
    """Why the URL is left out, for the person (None: it is theirs to see)."""
    if decision is None or decision.allowed:
        return None
    if decision.needs_sign_in:
        return ("Sign in to open it: a UI shows its task's results only to the task's owner, "
                "the groups it is shared with, and the production role.")  # fmt: skip
    return (f"{decision.detail}. Ask the task's owner to share it with one of your groups, "
            "or to send you a share link.")  # fmt: skip


@routes.get(BASE)
async def page(request: web.Request) -> web.StreamResponse:
    task_name, tool = _names(request)
    inst, history = await _load(request, task_name, tool)
    stay = "stay" in request.query
    # Issue 17: to the UI, or its URL on the page, only after the access check (the one every
    # path to a UI asks). Refused redirects are counted; a page that only leaves it out is not.
    decision = await _access(request, inst, count=not stay)
    status = 200
    if decision is not None and not stay:
        if decision.needs_sign_in:
            raise web.HTTPSeeOther(login_url(request))
        if decision.allowed:
            assert inst is not None and inst.url
            raise web.HTTPFound(inst.url)
        status = 403  # the progress, without the URL, and whom to ask
    ttl = request.query.get("ttl") or None
    owner = request.query.get("owner") or None
    context = _context(request, task_name, tool, inst, history, ttl=ttl, owner=owner,
                       withheld=_withheld(decision))  # fmt: skip
    response = aiohttp_jinja2.render_template("permalink.html", request, context, status=status)
    response.headers["Cache-Control"] = "no-store"  # it may carry the URL: never a shared cache
    return response


def _refusal_status(error: VisError) -> int:
    status = getattr(error, "status", None)  # the anonymous gate's refusals say theirs
    if isinstance(status, int):
        return status
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, SourceUnreachable):
        return 503
    return 409


def log_refused(task_name: str, tool: str, reason: str) -> None:
    """The name as it is, not its repr (issue 19), on one line: it comes from the URL."""
    log.info("permalink start of %s (%s) refused: %s", one_line(task_name), tool, reason)


@routes.post(BASE + "/start")
async def start(request: web.Request) -> web.StreamResponse:
    task_name, tool = _names(request)
    form = await request.post()
    ttl_field = form.get("ttl")
    ttl_text = ttl_field.strip() if isinstance(ttl_field, str) and ttl_field.strip() else None
    owner_field = form.get("owner")
    owner = owner_field.strip() if isinstance(owner_field, str) and owner_field.strip() else None
    try:
        ttl = parse_duration(ttl_text) if ttl_text else None
        inst = await request.app[STARTER].start(task_name, tool, ttl, None, owner=owner)
    except VisError as exc:
        # No record is made for a refusal: the page and the JSON by name show the reason.
        log_refused(task_name, tool, exc.reason)
        request.app[REFUSALS].remember(task_name, exc.reason, _now(request))
        context = _context(
            request, task_name, tool, None, [], refusal=exc.reason, ttl=ttl_text, owner=owner
        )
        return aiohttp_jinja2.render_template(
            "permalink.html", request, context, status=_refusal_status(exc)
        )
    request.app[REFUSALS].forget(task_name)
    if inst.task_name != task_name and inst.task_id != task_id_of(task_name):
        # A record made earlier without the name (e.g. from PanDA's message): name it, or the
        # page could not find it and would start again and again. Started by task id, the page
        # finds it by that id: it keeps PanDA's name for the task.
        await request.app[AGENT].ledger.name_task(inst.key, task_name)
    raise web.HTTPSeeOther(permalink(request, task_name, tool, ttl_text, owner))


@routes.post(BASE + "/relaunch")
async def relaunch(request: web.Request) -> web.StreamResponse:
    task_name, tool = _names(request)
    inst = await _current(request, task_name, tool)
    if inst is not None:
        # Already relaunched (another tab, another person): the page shows where it is now.
        with contextlib.suppress(InvalidTransition):
            await request.app[AGENT].relaunch(inst.key)
    raise web.HTTPSeeOther(permalink(request, task_name, tool))


@routes.get(BASE + "/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The page's live part, sent again whenever the record changes, for a bounded time."""
    task_name, tool = _names(request)
    streams = request.app[STREAMS]
    this = asyncio.current_task()
    assert this is not None
    streams.add(this)  # cancelled at shutdown
    lifetime = request.app[SETTINGS].stream_lifetime.total_seconds() * random.uniform(0.8, 1.0)
    wake = request.app[POLL_INTERVAL]  # how soon a closed page is noticed between changes
    try:
        async with request.app[FEED].follow(task_name, tool) as follower, \
                sse_response(request) as stream:  # fmt: skip
            with contextlib.suppress(ConnectionResetError, TimeoutError):  # page gone, or time up
                # The first event is always sent (a loaded replica may take longer than a short
                # lifetime to read it); the stream's time counts from its opening all the same.
                deadline = asyncio.get_running_loop().time() + lifetime
                async with asyncio.timeout(deadline + lifetime) as budget:
                    while stream.is_connected() and not _gone(request):
                        snapshot = await follower.next(wake)
                        if snapshot is not None:
                            event = await _state_event(request, follower, task_name, tool,
                                                       *snapshot)  # fmt: skip
                            await stream.send(event, event="state")
                            budget.reschedule(max(deadline, asyncio.get_running_loop().time()))
        return stream
    finally:
        streams.discard(this)


def _gone(request: web.Request) -> bool:
    """The page closed its connection (noticed at the next wake, not at the next ping)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _state_event(
    request: web.Request,
    follower: Follower[Snapshot],
    task_name: str,
    tool: str,
    inst: Instance | None,
    history: list[PhaseEvent],
) -> str:
    """One ``state`` event for this stream's caller: the shared snapshot, the URL only when
    the access check lets them see the UI (asked again at each change: sharing may change)."""
    withheld = _withheld(await _access(request, inst, count=False, follower=follower))
    context = _context(request, task_name, tool, inst, history, withheld=withheld)
    html = aiohttp_jinja2.render_string("progress.html", request, context)
    body = {"phase": context["phase"], "url": context["url"], "attempt": context["attempt"]}
    return json.dumps({**body, "html": html})
