"""The permalink behind a login: its Start and Relaunch buttons go through the catalog's checks
(owner, tool groups, production) and quotas, and the audit trail names the person.

Start: the permalink route calls its ``Starter``; ``GuardedStarter`` wraps the configured one
and takes the signed-in identity from the request's context (bound by ``authenticate``). A
request over a quota waits in the queue: the page then shows its place as the reason, and the
catalog follows it. Relaunch: ``relaunch`` below is routed ahead of the permalink's own.
Without login both behave exactly as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

from aiohttp import web

from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.context import current_identity
from idds_vis.api.auth.middleware import require
from idds_vis.api.catalog.service import CATALOG, Catalog
from idds_vis.api.routes import permalink
from idds_vis.api.starter import Starter
from idds_vis.api.urls import permalink as permalink_url
from idds_vis.domain.errors import InvalidRequest, InvalidTransition, VisError
from idds_vis.domain.identity import may_change, refusal
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import TERMINAL

routes = web.RouteTableDef()


class Queued(InvalidRequest):
    """Over a quota: the request waits in the queue (not a refusal, but no record yet)."""


class GuardedStarter:
    def __init__(self, inner: Starter, catalog: Catalog) -> None:
        self.inner = inner
        self.catalog = catalog

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
        if who is None:  # no login configured: as before
            return await self.inner.start(task_name, tool, ttl, requested_by, owner=owner)
        # The permalink is keyed by this name: the record must carry it.
        task = dataclasses.replace(await self.catalog.directory.by_name(task_name, owner),
                                   task_name=task_name)  # fmt: skip
        admission = await self.catalog.start(who, task, tool, ttl, origin="permalink")
        if admission.instance is not None:
            return admission.instance
        assert admission.waiting is not None
        place = admission.waiting
        raise Queued(
            f"your request is queued at position {place.position} ({place.reason or 'waiting'})"
            ": it starts by itself as soon as room frees up; the catalog shows its place"
        )


@routes.post(permalink.BASE + "/relaunch")
async def relaunch(request: web.Request) -> web.StreamResponse:
    if not request.app[AUTH].login:
        return await permalink.relaunch(request)
    who = require(request)
    task_name, tool = request.match_info["task_name"], request.match_info["tool"]
    catalog = request.app[CATALOG]
    found = [i for i in await catalog.agent.ledger.find(task_name=task_name) if i.tool == tool]
    if found and found[0].phase in TERMINAL:
        inst = found[0]
        owner = await catalog.owner(inst)
        if not may_change(who, owner, catalog.offer(tool).groups):
            raise web.HTTPForbidden(text=refusal(who, owner, inst.task_id, tool))
        # The record keeps its origin: a source a broker message named stays a message's source
        # (staged under the source policy and the address guard) whoever relaunches it.
        request_ = VisRequest(inst.task_id, source=inst.source, tool=tool, ttl=inst.ttl,
                              origin=inst.origin, requested_by=who.user,
                              task_name=task_name)  # fmt: skip
        with contextlib.suppress(InvalidTransition):
            try:
                await catalog.queue.request(request_, who, owner)
            except VisError as exc:
                raise web.HTTPConflict(text=exc.reason) from None
    raise web.HTTPSeeOther(permalink_url(request, task_name, tool))
