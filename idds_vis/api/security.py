"""Middlewares every route gets: a same-origin check on state-changing requests (a browser on
another site must not be able to relaunch UIs for its visitors; with login, the catalog also
checks a CSRF token: ``idds_vis.api.auth``) and the headers that keep the pages out of frames
and scripts out of the pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from idds_vis.api.auth.denials import Denial, count
from idds_vis.api.urls import public_base

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A request with its own credentials (a bearer token) carries nothing a browser adds by
    # itself, so another site cannot forge it: API clients send no Origin.
    if request.method not in SAFE_METHODS and "Authorization" not in request.headers:
        # Browsers send Origin with every POST; Referer is the fallback of older ones.
        sent = request.headers.get("Origin") or request.headers.get("Referer")
        allowed = {_origin(public_base(request)), _origin(str(request.url))}
        if not sent or _origin(sent) not in allowed:
            count(request.app, Denial.CROSS_SITE)
            raise web.HTTPForbidden(text="cross-site request refused: use the idds-vis page")
    return await handler(request)


@web.middleware
async def page_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.content_type == "text/html":
        response.headers.update(PAGE_HEADERS)
    return response
