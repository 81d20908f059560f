"""Sharing a UI (issue 17): share links and the UI's visibility, for its owners.

- ``GET /s/<token>``: a share link. Valid: the audit trail records the use (share id, who or
  which address), a cookie scoped to that one UI's path is set, and the browser goes to the
  UI (303). Refused (forged, revoked, expired, its UI relaunched or ended): a page that says
  why, 403, counted and audited.
- ``GET  /api/v1/visualizations/<task>/<tool>/shares``: the UI's visibility and its shares.
- ``POST /api/v1/visualizations/<task>/<tool>/shares`` ``{expires_in?, label?}``: a new link
  (201, its URL shown this once), expiring at the UI's expiry or sooner. Rate-limited per
  person (``SHARES_RATE``); at most ``MAX_LIVE_SHARES`` live links per UI (else 409 saying
  so); records of shares ended more than ``ENDED_SHARES_KEPT`` ago are purged here (their
  audit entries stay).
- ``POST .../shares/<share id>/revoke``: revoke at once.
- ``POST .../visibility`` ``{visibility}``: private, ``groups:a,b``, signed-in, or public
  (only where ``allow_public_uis``); takes effect at the next request to the UI.

Each of these needs a signed-in identity that owns the task or requested the UI, or the
production role (``domain.access.may_share``): not the tool's manager groups, and never a
share link's holder. Each change is audited.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from idds_vis.api.auth import share_links
from idds_vis.api.auth.denials import Denial, count
from idds_vis.api.auth.middleware import require
from idds_vis.api.auth.ratelimit import RateLimiter
from idds_vis.api.catalog.service import CATALOG
from idds_vis.api.fields import request_fields
from idds_vis.api.keys import AGENT, SETTINGS
from idds_vis.api.routes.auth_check import count_denial
from idds_vis.api.urls import public_base
from idds_vis.domain.access import (
    Grant,
    check_visibility,
    may_share,
    parse_visibility,
    person_requester,
)
from idds_vis.domain.errors import InvalidRequest, VisError
from idds_vis.domain.expiry import parse_duration
from idds_vis.domain.identity import Identity
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.share_links import (
    ENDED_SHARES_KEPT,
    REFUSAL_WORDS,
    Share,
    TooManyShares,
    check_room,
    clean_label,
    new_share_id,
    share_expiry,
    shareable,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
ONE = "/api/v1/visualizations/{task_id:[^/]+}/{tool:[a-z0-9-]+}"
SHARE_ID = "{share_id:[0-9a-f]{32}}"
NO_STORE = {"Cache-Control": "no-store"}
SHARES_RATE = "20/hour"  # new links per person: plenty for people, little for a script
SHARE_LIMITER = web.AppKey("share_limiter", RateLimiter)


def install(app: web.Application) -> None:
    app[share_links.SHARE_KEY] = share_links.signing_key(app)
    limiter = RateLimiter(SHARES_RATE)
    app[SHARE_LIMITER] = limiter
    audited = RateLimiter("1/minute")
    app[share_links.REFUSALS_AUDITED] = audited

    async def close(app: web.Application) -> AsyncIterator[None]:
        yield
        await limiter.close()
        await audited.close()

    app.cleanup_ctx.append(close)
    app.add_routes(routes)


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status, headers=NO_STORE)


async def _owned(request: web.Request) -> tuple[Identity, Instance]:
    """The caller and the record they may share, else the HTTP refusal (raised)."""
    who = require(request)
    key = InstanceKey(request.match_info["task_id"], request.match_info["tool"])
    inst = await request.app[AGENT].ledger.get(key)
    if inst is None:
        raise _raised(404, f"no visualization of task {key.task_id} ({key.tool})")
    catalog = request.app[CATALOG]
    grant = Grant(owner=await catalog.owner(inst),
                  requested_by=person_requester(inst.origin, inst.requested_by))
    if not may_share(who, grant):
        raise _raised(403, f"{who.user} may not share this UI: only its owner and the "
                           "production role may")  # fmt: skip
    return who, inst


def _raised(status: int, why: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
        409: web.HTTPConflict, 429: web.HTTPTooManyRequests,
    }  # fmt: skip
    return kinds[status](text=web.json_response({"error": why}).text,
                         content_type="application/json", headers=NO_STORE)  # fmt: skip


def link(request: web.Request, token: str) -> str:
    return f"{public_base(request)}/s/{token}"


async def _listing(request: web.Request, inst: Instance) -> dict[str, Any]:
    shares, _ = share_links.ledgers(request.app)
    now = request.app[AGENT].clock.now()
    return {
        "task_id": inst.task_id,
        "tool": inst.tool,
        "visibility": str(parse_visibility(inst.visibility)),
        "public_allowed": request.app[SETTINGS].allow_public_uis,
        "shares": [
            s.as_json(now)
            for s in await shares.shares_of(inst.key)
            if s.path_token == inst.path_token
        ],
    }


# -- the owner's API --------------------------------------------------------------------------
@routes.get(ONE + "/shares")
async def listing(request: web.Request) -> web.Response:
    _who, inst = await _owned(request)
    return web.json_response(await _listing(request, inst), headers=NO_STORE)


@routes.post(ONE + "/shares")
async def create(request: web.Request) -> web.Response:
    who, inst = await _owned(request)
    wait = await request.app[SHARE_LIMITER].allow(f"id:{who.subject}")
    if wait is not None:
        count(request.app, Denial.SHARE_RATE_LIMIT)
        why = f"too many share links made: try again in {wait} s"
        raise web.HTTPTooManyRequests(
            text=web.json_response({"error": why}).text,
            content_type="application/json",
            headers={"Retry-After": str(wait), **NO_STORE},
        )
    fields = await request_fields(request)
    now = request.app[AGENT].clock.now()
    shares, _ = share_links.ledgers(request.app)
    # Ended shares' records go a while after they end (their audit entries stay): here, where
    # new ones are made, rather than in a loop of the agent's.
    purged = await shares.purge_shares(now - ENDED_SHARES_KEPT)
    if purged:
        log.info("%d ended share records purged", purged)
    try:
        ui_expiry = shareable(inst, now)
        assert inst.path_token is not None  # shareable() checked
        check_room(await shares.shares_of(inst.key), inst.path_token, now)
        text = fields.get("expires_in", "").strip()
        expires_at = share_expiry(now, ui_expiry, parse_duration(text) if text else None)
        label = clean_label(fields.get("label"))
    except VisError as exc:
        return _error(409 if isinstance(exc, TooManyShares) else 400, exc.reason)
    share = Share(id=new_share_id(), task_id=inst.task_id, tool=inst.tool,
                  path_token=inst.path_token, created_by=who.user, created_at=now,
                  expires_at=expires_at, label=label)  # fmt: skip
    token = share_links.sign(request.app[share_links.SHARE_KEY], share)
    share = Share(**{**share.__dict__, "token_hash": share_links.token_hash(token)})
    await shares.add_share(share, attempt=inst.attempt,
                           detail=f"share {share.id} until {expires_at.isoformat()}")  # fmt: skip
    log.info("share %s of %s made by %s, until %s", share.id, inst.name, who.user,
             expires_at.isoformat())  # fmt: skip
    body = {"share": share.as_json(now), "link": link(request, token)}
    return web.json_response(body, status=201, headers=NO_STORE)


@routes.post(ONE + "/shares/" + SHARE_ID + "/revoke")
async def revoke(request: web.Request) -> web.Response:
    who, inst = await _owned(request)
    shares, _ = share_links.ledgers(request.app)
    sid = request.match_info["share_id"]
    found = await shares.get_share(sid)
    if found is None or found.key != inst.key:
        return _error(404, "no such share link of this UI")
    now = request.app[AGENT].clock.now()
    done = await shares.revoke_share(sid, who.user, now, detail=f"share {sid}")
    assert done is not None
    log.info("share %s of %s revoked by %s", sid, inst.name, who.user)
    return web.json_response({"share": done.as_json(now)}, headers=NO_STORE)


@routes.post(ONE + "/visibility")
async def visibility(request: web.Request) -> web.Response:
    who, inst = await _owned(request)
    fields = await request_fields(request)
    try:
        wanted = parse_visibility(fields.get("visibility"))
        check_visibility(wanted, public_allowed=request.app[SETTINGS].allow_public_uis)
    except InvalidRequest as exc:
        return _error(400, exc.reason)
    _, access = share_links.ledgers(request.app)
    before = str(parse_visibility(inst.visibility)) if _readable(inst.visibility) else "private"
    now = request.app[AGENT].clock.now()
    changed = await access.set_visibility(inst.key, str(wanted), now)
    await access.record_action(who.user, "visibility", inst.key, now, attempt=inst.attempt,
                               detail=f"{before} -> {wanted}")  # fmt: skip
    log.info("visibility of %s: %s -> %s by %s", inst.name, before, wanted, who.user)
    return web.json_response(await _listing(request, changed), headers=NO_STORE)


def _readable(text: str | None) -> bool:
    try:
        parse_visibility(text)
    except InvalidRequest:
        return False
    return True


# -- the link -------------------------------------------------------------------------------
@routes.get("/s/{token}")
async def open_link(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    checked = await share_links.check(request, token, None)
    await share_links.audit_use(request, checked, "link")
    if not checked.allowed or checked.share is None or checked.inst is None:
        assert checked.reason is not None
        count_denial(request, checked.reason)
        return share_links.refusal_page(request, REFUSAL_WORDS[checked.reason])
    inst = checked.inst
    response = web.Response(status=303, headers={
        "Location": inst.url or share_links.ui_path(inst), "Referrer-Policy": "no-referrer",
        **NO_STORE})  # fmt: skip
    share_links.set_cookie(response, request, token, checked.share, inst)
    return response
