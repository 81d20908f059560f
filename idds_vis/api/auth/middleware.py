"""``authenticate``: who is asking (a bearer token, else the browser's session), how often, and
whether this route lets them in. Handlers then ask ``identity(request)`` or ``require(request)``.

- ``Authorization: Bearer <token>``: an OIDC token verified against the issuer (API clients,
  robots, the iDDS VisualizationWork). A bad token is a 401 whatever the route: a client that
  sends one must learn it is wrong, not be served as anonymous.
- the session cookie: the browser after ``/auth/login``. State-changing requests made with it
  must carry the CSRF token (the permalink's own forms are guarded by the same-origin check).
- with login configured and ``reads_need_identity``, the monitor's JSON, the permalink pages
  and the catalog's reads need an identity (``public_task_json`` keeps the monitor's JSON open
  for the BigPanDA snippet); the permalink's pages and buttons send a browser to sign in.
- a live stream (``.../events``) holds one of the caller's stream slots while it is open
  (``StreamCaps``); the client is the identity, else the address, which behind
  ``trusted_proxies`` is the real client's (``forwarded``).

Every refusal here is counted by reason (``idds_vis_access_denied_total``).
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session

from idds_vis.agent.actor import acting_as
from idds_vis.api.auth import context
from idds_vis.api.auth.config import AUTH, AuthConfig
from idds_vis.api.auth.denials import Denial, count
from idds_vis.api.auth.forwarded import is_local
from idds_vis.api.auth.oidc import IssuerUnreachable, TokenRefused
from idds_vis.api.auth.ratelimit import RateLimiter
from idds_vis.api.auth.sessions import csrf_ok, identity_of
from idds_vis.api.auth.streams import StreamCaps
from idds_vis.api.urls import root
from idds_vis.domain.identity import Identity

log = logging.getLogger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDENTITY = web.RequestKey("identity", Identity)
VIA = web.RequestKey("via", str)  # "bearer", "session" or "anonymous"
LIMITER = web.AppKey("rate_limiter", RateLimiter)
STREAM_CAPS = web.AppKey("stream_caps", StreamCaps)
# Files and probes: no identity, no rate limit (a page loads several of them at once).
_UNCOUNTED = ("/static/", "/embed.js", "/robots.txt", "/healthz", "/readyz", "/metrics")
_MONITOR = "/api/v1/tasks/"
_PERMALINK = "/t/"
_CORS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}
_STREAM = "/events"  # every Server-Sent Events route ends so
_STREAMED = (_PERMALINK, "/api/v1/")  # ... and lives under these (not the proxied UIs)
STREAM_RETRY_SECONDS = 15


def identity(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def require(request: web.Request) -> Identity:
    """The caller's identity; 401 when there is none."""
    found: Identity | None = request.get(IDENTITY)
    if found is None:
        raise unauthorized(request, "sign in first: this needs a signed-in identity")
    return found


def unauthorized(request: web.Request, why: str, *, cors: bool = False) -> web.HTTPException:
    challenge = 'Bearer realm="idds-vis"'
    if request.headers.get("Authorization"):
        challenge += f', error="invalid_token", error_description="{why}"'
    headers = {"WWW-Authenticate": challenge, **(_CORS if cors else {})}
    body = {"error": why, "login_url": login_url(request)}
    return web.HTTPUnauthorized(text=web.json_response(body).text,
                                content_type="application/json", headers=headers)  # fmt: skip


def login_url(request: web.Request, after: str | None = None) -> str:
    return f"{root(request)}/auth/login?next={quote(after or _back_to(request), safe='')}"


def _back_to(request: web.Request) -> str:
    """Where a browser sent to sign in comes back: the page it was on."""
    if request.method in SAFE_METHODS:
        return request.path_qs
    referer = request.headers.get("Referer")
    if referer and urlsplit(referer).netloc == request.host:
        parts = urlsplit(referer)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return request.path.rsplit("/", 1)[0]  # the permalink of its .../start or .../relaunch


async def _who(request: web.Request, config: AuthConfig) -> tuple[Identity | None, str]:
    if not config.login:
        return None, "anonymous"  # as before login existed: a token is not even looked at
    header = request.headers.get("Authorization")
    if header is not None and config.oidc is None:  # the development sign-in: no issuer
        raise unauthorized(request, "bearer tokens need an OIDC issuer (this is dev_sign_in)")
    if header is not None and config.oidc is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized(request, "the Authorization header must be 'Bearer <token>'")
        try:
            claims = await config.oidc.verify(token.strip())
        except TokenRefused as exc:
            log.info("bearer token refused: %s", exc)
            count(request.app, Denial.TOKEN_REFUSED)
            raise unauthorized(request, f"token refused: {exc}",
                               cors=request.path.startswith(_MONITOR)) from None  # fmt: skip
        except IssuerUnreachable as exc:
            log.warning("cannot verify a token: %s", exc)
            raise web.HTTPServiceUnavailable(
                text="the identity provider cannot be reached to check the token"
            ) from None
        return config.identity(claims), "bearer"
    session = await get_session(request)
    found = identity_of(session)
    return found, "session" if found is not None else "anonymous"


def _gate(request: web.Request, config: AuthConfig, who: Identity | None) -> None:
    """Refuse what this route does not allow to this caller (before the handler runs)."""
    if not config.login:
        return
    path, changes = request.path, request.method not in SAFE_METHODS
    if who is None:
        if path.startswith(_PERMALINK) and (changes or config.reads_need_identity):
            count(request.app, Denial.SIGN_IN_REQUIRED)
            if path.endswith("/events"):
                raise unauthorized(request, "sign in to follow this visualization")
            raise web.HTTPSeeOther(login_url(request))
        if path.startswith(_MONITOR) and config.reads_need_identity \
                and not config.public_task_json:  # fmt: skip
            count(request.app, Denial.SIGN_IN_REQUIRED)
            raise unauthorized(request, "sign in to idds-vis to see this task's visualizations",
                               cors=True)  # fmt: skip


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[AUTH]
    if request.path.startswith(_UNCOUNTED):
        return await handler(request)
    who, via = await _who(request, config)
    address = request.remote or "unknown"
    client = f"id:{who.subject}" if who else f"ip:{address}"
    wait = await request.app[LIMITER].allow(client)
    if wait is not None:
        count(request.app, Denial.RATE_LIMIT)
        raise _too_many(f"too many requests: try again in {wait} s", wait)
    _gate(request, config, who)
    changes = request.method not in SAFE_METHODS
    # The proxied UIs (/vis/, issue 17) post only read-only searches (the UI's gate refuses
    # the rest), guarded by the same-origin check like the permalink's forms.
    if changes and via == "session" and not request.path.startswith((_PERMALINK, "/vis/")) \
            and not await csrf_ok(request):
        count(request.app, Denial.CSRF)
        raise web.HTTPForbidden(
            text=web.json_response({"error": "missing or wrong CSRF token: reload the page"}).text,
            content_type="application/json",
        )
    if who is not None:
        request[IDENTITY] = who
    request[VIA] = via
    # Anonymous changes are audited with the (real) client's address.
    actor = who.user if who else f"anonymous {address}"
    here = context.Client(address, is_local(request))
    with acting_as(actor), context.serving(who, here):
        if request.method == "GET" and request.path.endswith(_STREAM) \
                and request.path.startswith(_STREAMED):  # fmt: skip
            return await _streaming(request, handler, client)
        return await handler(request)


async def _streaming(request: web.Request, handler: Handler, client: str) -> web.StreamResponse:
    """A live stream holds one of its client's slots until it ends."""
    caps = request.app[STREAM_CAPS]
    refused = caps.take(client)
    if refused is not None:
        count(request.app, refused)
        raise _too_many(caps.refusal(refused), STREAM_RETRY_SECONDS)
    try:
        return await handler(request)
    finally:
        caps.give_back(client)


def _too_many(why: str, wait: int) -> web.HTTPException:
    return web.HTTPTooManyRequests(
        text=web.json_response({"error": why}).text,
        content_type="application/json",
        headers={"Retry-After": str(wait)},
    )
