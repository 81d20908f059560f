"""Who may see a UI, as the web app answers it for every path that leads to one (issue 17).

``GET /auth/check`` is the forward-auth endpoint an nginx ingress calls before it passes a
request to a UI (``nginx.ingress.kubernetes.io/auth-url``): nginx sends the visitor's cookies
and ``Authorization`` header and the original request's URI in ``X-Original-URI``. It answers
204 (let it through), 401 (nobody signed in: nginx sends the browser to ``auth-signin``), or
403 (signed in, but not one of the people the UI is for). The local proxy
(``routes/ui_proxy.py``), the record API and the monitor's JSON ask the same ``decide``,
which asks ``domain.access.may_view``; every refusal is counted by its reason.

At a UI itself (this endpoint and the local proxy, ``decide_ui``), a share link's cookie
(``api/auth/share_links.py``) lets its holder in too, to view that one UI only; a refused
share link is a 403 with its reason, counted and audited.

A UI on Kubernetes answers only requests carrying its per-instance secret
(``ui/proxy_guard.py``, ``objects.guarded``): an allowing 204 carries it in
``X-Idds-Vis-Proxy``, which nginx sets on the request it passes to the UI (the Ingress's
``auth-response-headers``), so an Ingress that skips this check (any tenant's, to the UI's
Service) reaches a UI that refuses it. Only an allowing answer carries it; it is never logged.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from idds_vis.api.auth import share_links
from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.middleware import identity
from idds_vis.api.catalog.service import CATALOG
from idds_vis.api.keys import AGENT, SETTINGS
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.domain.access import (
    DENIAL_REASONS,
    UNKNOWN_INSTANCE,
    Decision,
    Grant,
    may_view,
    parse_visibility,
    person_requester,
)
from idds_vis.domain.errors import DeployError, InvalidRequest
from idds_vis.domain.models import Instance
from idds_vis.domain.proxy_tokens import proof
from idds_vis.domain.share_links import REFUSAL_WORDS, SHARE_REASONS

routes = web.RouteTableDef()
ORIGINAL_URI = "X-Original-URI"
_NO_STORE = {"Cache-Control": "no-store"}
_DENIED: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def denied_counter(registry: CollectorRegistry) -> Counter:
    """``idds_vis_ui_access_denied_total{reason}`` in the agent's registry (once per registry:
    several apps may serve one agent)."""
    counter = _DENIED.get(registry)
    if counter is None:
        counter = Counter("idds_vis_ui_access_denied_total",
                          "Looks at a UI (its pages, its URL) refused, by reason", ["reason"],
                          registry=registry)  # fmt: skip
        for reason in DENIAL_REASONS:
            counter.labels(reason=reason)  # exported at 0 from the start
        _DENIED[registry] = counter
    return counter


def count_denial(request: web.Request, reason: str) -> None:
    denied_counter(request.app[AGENT].metrics.registry).labels(reason=reason).inc()


async def decide(
    request: web.Request,
    inst: Instance,
    *,
    count: bool = True,
    owner_of: Callable[[Instance], Awaitable[str | None]] | None = None,
) -> Decision:
    """May the caller of ``request`` see the UI of ``inst``? Refusals are counted (unless
    ``count`` is False: a listing that only leaves the URL out is no attempt to get in).
    ``owner_of`` looks the task's owner up instead of the catalog (a stream's shared one)."""
    catalog = request.app[CATALOG]
    try:
        visibility = parse_visibility(inst.visibility)
    except InvalidRequest:
        visibility = parse_visibility(None)  # an unreadable value shares nothing
    groups = catalog.tools[inst.tool].groups if inst.tool in catalog.tools else ()
    login = request.app[AUTH].login
    owner = await (owner_of or catalog.owner)(inst) if login else None
    grant = Grant(owner=owner, requested_by=person_requester(inst.origin, inst.requested_by),
                  visibility=visibility,
                  manager_groups=groups)  # fmt: skip
    decision = may_view(identity(request), grant, login=login,
                        public_allowed=request.app[SETTINGS].allow_public_uis)  # fmt: skip
    if count and not decision.allowed and decision.reason is not None:
        count_denial(request, decision.reason)
    return decision


async def decide_ui(request: web.Request, inst: Instance, segment: str) -> Decision:
    """``decide`` at the UI itself (``/vis/<segment>/...``): whoever ``decide`` refuses may
    still hold a share link's cookie for this UI (viewing only). A refused share's reason
    replaces the other one: the holder is told why the link no longer works."""
    decision = await decide(request, inst, count=False)
    token = request.cookies.get(share_links.COOKIE)
    if not decision.allowed and token:
        checked = await share_links.check(request, token, segment)
        if checked.allowed:
            return Decision(True)
        await share_links.audit_use(request, checked, "auth-check"
                                    if request.path == CHECK_PATH else "proxy")  # fmt: skip
        assert checked.reason is not None
        decision = Decision(False, checked.reason, REFUSAL_WORDS[checked.reason])
    if not decision.allowed and decision.reason is not None:
        count_denial(request, decision.reason)
    return decision


def share_refused(decision: Decision) -> bool:
    return decision.reason in SHARE_REASONS


def path_segment(uri: str) -> str | None:
    """``<segment>`` of ``/vis/<segment>/...`` (a path or a full URL), else None."""
    path = urlsplit(uri).path
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "vis" or not parts[2]:
        return None
    return parts[2]


async def instance_at(request: web.Request, segment: str) -> Instance | None:
    return await request.app[CATALOG].ledger.get_by_path(segment)


CHECK_PATH = "/auth/check"


async def guard_headers(request: web.Request, inst: Instance) -> dict[str, str] | None:
    """What an allowed request must carry to the UI of ``inst``: its proxy secret's header
    when the deployer guards its UIs, else nothing; None when the secret cannot be had (the
    UI's Secret is gone, or the cluster refused to read it)."""
    deployer = request.app[AGENT].deployer
    if not isinstance(deployer, KubernetesDeployer):
        return {}
    try:
        headers = await deployer.proxy_headers(inst)
    except DeployError:
        return None
    if headers is None and objects.guarded(deployer.ks):
        return None
    # A browser may call /auth/check itself: it gets a proof good for minutes, never the secret
    # (which would let it in for the UI's whole life after losing access).
    now = time.time()
    return {name: proof(value, now) for name, value in (headers or {}).items()}


@routes.get(CHECK_PATH)
async def check(request: web.Request) -> web.Response:
    uri = request.headers.get(ORIGINAL_URI) or request.headers.get("X-Original-URL") or ""
    segment = path_segment(uri)
    if segment is None:
        return web.json_response({"error": f"{ORIGINAL_URI} names no UI (/vis/<path>/...)"},
                                 status=400, headers=_NO_STORE)  # fmt: skip
    inst = await instance_at(request, segment)
    if inst is None:
        count_denial(request, UNKNOWN_INSTANCE)
        return web.json_response({"error": "no UI lives at this path"}, status=403,
                                 headers=_NO_STORE)  # fmt: skip
    decision = await decide_ui(request, inst, segment)
    if decision.allowed:
        guard = await guard_headers(request, inst)
        if guard is None:
            return web.json_response({"error": "this UI is not running (it may be starting)"},
                                     status=503, headers=_NO_STORE)  # fmt: skip
        return web.Response(status=204, headers={**_NO_STORE, **guard})
    if decision.needs_sign_in:
        return web.json_response({"error": decision.detail}, status=401, headers={
            **_NO_STORE, "WWW-Authenticate": 'Bearer realm="idds-vis"'})  # fmt: skip
    return web.json_response({"error": decision.detail}, status=403, headers=_NO_STORE)
