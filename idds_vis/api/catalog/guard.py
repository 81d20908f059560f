"""The permalink behind a login: its Start and Relaunch buttons go through the catalog's checks
(owner, tool groups, production) and quotas, and the audit trail names the person.

Start: the permalink route calls its ``Starter``; ``GuardedStarter`` wraps the configured one
and takes the signed-in identity from the request's context (bound by ``authenticate``). A
request over a quota waits in the queue: the page then shows its place as the reason, and the
catalog follows it. Relaunch: ``relaunch`` below is routed ahead of the permalink's own.
Without login both go through the anonymous gate (``anonymous``): from this machine only
unless allowed, within the anonymous lifetime and quotas.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

from aiohttp import web

from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.context import current_client, current_identity
from idds_vis.api.auth.denials import Denial, count
from idds_vis.api.auth.middleware import require
from idds_vis.api.catalog.anonymous import ANONYMOUS, AnonymousGate, AnonymousRefused
from idds_vis.api.catalog.service import CATALOG, Catalog
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.api.routes import permalink
from idds_vis.api.starter import Starter, task_id_of
from idds_vis.api.task_feed import current
from idds_vis.api.urls import permalink as permalink_url
from idds_vis.api.views import scrub_paths
from idds_vis.domain.errors import InvalidRequest, InvalidTransition, NotFound, VisError
from idds_vis.domain.identity import Identity, may_change, refusal
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import TERMINAL

routes = web.RouteTableDef()


class Queued(InvalidRequest):
    """Over a quota: the request waits in the queue (not a refusal, but no record yet)."""


async def _task(catalog: Catalog, task_name: str, owner: str | None) -> CatalogTask:
    """The task of a permalink: by name, or by task id when the name is digits and PanDA knows
    no task of that name (``/t/4711/mlflow``: a record made by the CLI has no name, issue 19)."""
    try:
        # The permalink is keyed by this name: the record must carry it.
        return dataclasses.replace(await catalog.directory.by_name(task_name, owner),
                                   task_name=task_name)  # fmt: skip
    except NotFound:
        if task_id_of(task_name) is None:
            raise
    return await catalog.directory.task(task_name)  # its record keeps PanDA's name for it


class GuardedStarter:
    def __init__(self, inner: Starter, catalog: Catalog, anonymous: AnonymousGate) -> None:
        self.inner = inner
        self.catalog = catalog
        self.anonymous = anonymous

    async def start(
        self,
        task_name: str,
        tool: str,
        ttl: timedelta | None,
        requested_by: str | None,
        *,
        owner: str | None = None,
    ) -> Instance:
        who = current_identity()
        if who is None:  # no login configured: within the anonymous limits
            return await self._anonymous(task_name, tool, ttl, owner)
        task = await _task(self.catalog, task_name, owner)
        admission = await self.catalog.start(who, task, tool, ttl, origin="permalink")
        if admission.instance is not None:
            return admission.instance
        assert admission.waiting is not None
        place = admission.waiting
        raise Queued(
            f"your request is queued at position {place.position} ({place.reason or 'waiting'})"
            ": it starts by itself as soon as room frees up; the catalog shows its place"
        )

    async def _anonymous(
        self, task_name: str, tool: str, ttl: timedelta | None, owner: str | None
    ) -> Instance:
        gate = self.anonymous
        client = gate.from_where(current_client())
        live = await current(self.catalog.agent, task_name, tool)
        if live is not None and live.phase not in TERMINAL:
            return live  # already up (another visitor): nothing is started
        chosen = gate.ttl(ttl, self.catalog.offer(tool).default_ttl)
        async with gate.room(client) as name:
            return await self.inner.start(task_name, tool, chosen, name, owner=owner)


@routes.post(permalink.BASE + "/relaunch")
async def relaunch(request: web.Request) -> web.StreamResponse:
    if not request.app[AUTH].login:
        return await _anonymous_relaunch(request)
    who = require(request)
    task_name, tool = request.match_info["task_name"], request.match_info["tool"]
    catalog = request.app[CATALOG]
    # By name, or by task id for a record without one (made by the CLI or the catalog).
    inst = await current(catalog.agent, task_name, tool)
    if inst is not None and inst.phase in TERMINAL:
        owner = await catalog.owner(inst)
        if not may_change(who, owner, catalog.offer(tool).groups):
            count(request.app, Denial.NOT_ALLOWED)
            raise web.HTTPForbidden(text=refusal(who, owner, inst.task_id, tool))
        # The record keeps its origin: a source a broker message named stays a message's source
        # (staged under the source policy and the address guard) whoever relaunches it.
        request_ = VisRequest(inst.task_id, source=inst.source, tool=tool, ttl=inst.ttl,
                              origin=inst.origin, requested_by=who.user,
                              task_name=inst.task_name)  # fmt: skip
        with contextlib.suppress(InvalidTransition):
            try:
                await catalog.queue.request(request_, who, owner)
            except VisError as exc:
                raise web.HTTPConflict(text=scrub_paths(exc.reason)) from None
    raise web.HTTPSeeOther(permalink_url(request, task_name, tool))


async def _anonymous_relaunch(request: web.Request) -> web.StreamResponse:
    """Relaunch with no login: the anonymous gate as for a start; the record's lifetime must be
    within the anonymous cap, and the relaunch is requested by the client's address."""
    task_name, tool = request.match_info["task_name"], request.match_info["tool"]
    catalog, gate = request.app[CATALOG], request.app[ANONYMOUS]
    inst = await current(catalog.agent, task_name, tool)
    if inst is not None and inst.phase in TERMINAL:
        try:
            client = gate.from_where(current_client())
            gate.ttl(inst.ttl, inst.ttl)
            async with gate.room(client) as name:
                request_ = VisRequest(inst.task_id, source=inst.source, tool=tool, ttl=inst.ttl,
                                      origin=inst.origin, requested_by=name,
                                      task_name=inst.task_name)  # fmt: skip
                who = Identity(user=name, subject=name)
                with contextlib.suppress(InvalidTransition):
                    admission = await catalog.queue.request(request_, who, None)
                    if admission.waiting is not None:
                        # Over the operator's own limits: an anonymous ask does not wait.
                        await catalog.queue.cancel(request_, name)
                        raise gate.over_limits(admission.waiting.reason)
        except AnonymousRefused as exc:
            return web.Response(status=exc.status, text=exc.reason)
        except VisError as exc:
            raise web.HTTPConflict(text=scrub_paths(exc.reason)) from None
    raise web.HTTPSeeOther(permalink_url(request, task_name, tool))
