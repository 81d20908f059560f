"""``/vis/<path token>/...``: the local deployer's UIs, reached through the web app (issue 17).

The web app finds the record by the path's random token, asks the one access check
(``auth_check.decide``), then passes the request to the UI process on loopback with the
instance's secret header (the UI refuses anything without it, ``ui/proxy_guard.py``). Bodies
stream both ways chunk by chunk (a large artefact is never held in memory), over one
keep-alive client session. A browser without a session is sent to sign in and comes back
here; a signed-in person the UI is not for gets 403. The visitor's cookies and bearer token
are not passed on: they are the web app's, not the UI's.

With the local deployer (``LocalProcessDeployer.upstream``), and on OpenShift, where a Route
has no forward-auth, with the web app as the Route's backend (``KubernetesDeployer.upstream``:
the UI's Service and its secret header); behind an nginx ingress the ingress routes ``/vis/``
to the UI pods and asks ``/auth/check`` first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from idds_vis.api.auth import share_links
from idds_vis.api.auth.middleware import login_url, unauthorized
from idds_vis.api.keys import AGENT
from idds_vis.api.routes.auth_check import count_denial, decide_ui, instance_at, share_refused
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.domain.access import UNKNOWN_INSTANCE

routes = web.RouteTableDef()
CLIENT = web.AppKey("ui_proxy_client", aiohttp.ClientSession)
# What the read-only gate can let through (it refuses the rest itself; these reach it).
METHODS = ("GET", "HEAD", "POST")
CHUNK = 64 * 1024
SMALL_BODY = 1024 * 1024  # the UI's searches; the gate lets no upload through
# Hop-by-hop headers (RFC 9110 7.6.1) and what is the web app's own, never the UI's.
_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
              "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length")
)  # fmt: skip
_NOT_FORWARDED = _HOP | {"cookie", "authorization", "x-idds-vis-proxy", "origin", "referer"}
_NOT_RETURNED = _HOP | {"set-cookie"}


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled session for every proxied request; no total timeout (a large artefact may
    take long), only for connecting and between reads. Bodies pass on as they are (gzip too)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=300)
    connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
                                     ) as session:  # fmt: skip
        app[CLIENT] = session
        yield


def install(app: web.Application) -> None:
    app.cleanup_ctx.append(client_session)
    app.add_routes(routes)


@routes.route("*", "/vis/{segment}")
async def bare(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.path + "/" + (f"?{request.query_string}"
                                              if request.query_string else ""))  # fmt: skip


@routes.route("*", "/vis/{segment}/{tail:.*}")
async def proxy(request: web.Request) -> web.StreamResponse:
    deployer = request.app[AGENT].deployer
    if not isinstance(deployer, LocalProcessDeployer) and not (
        isinstance(deployer, KubernetesDeployer) and objects.proxied(deployer.ks)
    ):
        raise web.HTTPNotFound(text="UIs are not served by this web app")
    segment = request.match_info["segment"]
    inst = await instance_at(request, segment)
    if inst is None:
        count_denial(request, UNKNOWN_INSTANCE)
        if request.cookies.get(share_links.COOKIE):
            # A share link's UI that has ended: say so, and forget the link's cookie.
            return share_refusal(request, "the UI this link was shared for has ended",
                                 f"/vis/{segment}/", status=404)  # fmt: skip
        raise web.HTTPNotFound(text="no UI lives at this address (it may have expired)")
    decision = await decide_ui(request, inst, segment)
    if not decision.allowed:
        if share_refused(decision):
            return share_refusal(request, decision.detail, share_links.ui_path(inst))
        if decision.needs_sign_in:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(login_url(request, request.path_qs))
            raise unauthorized(request, decision.detail)
        raise web.HTTPForbidden(text=decision.detail)
    if request.method not in METHODS:
        raise web.HTTPForbidden(text="this UI is read-only")
    target = await deployer.upstream(inst)
    if target is None:
        raise web.HTTPServiceUnavailable(text="this UI is not running (it may be starting)")
    origin, secret = target
    # The UI serves under the same /vis/<segment>/ prefix: the path goes on as it came.
    return await _pass_on(request, URL(origin + request.raw_path, encoded=True), secret)


def share_refusal(request: web.Request, words: str, path: str, status: int = 403
                  ) -> web.Response:  # fmt: skip
    """A share link that no longer opens this UI: a page that says why (403), and the cookie
    dropped (the next visit is an ordinary one: sign in, or nothing)."""
    response = share_links.refusal_page(request, words, status)
    share_links.clear_cookie(response, request, path)
    return response


async def _pass_on(request: web.Request, url: URL, secret: dict[str, str]) -> web.StreamResponse:
    headers = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED
    )
    headers.update(secret)
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = request.scheme
    body: object = request.content if request.body_exists else None
    if request.body_exists and request.content_length is not None \
            and request.content_length <= SMALL_BODY:  # fmt: skip
        # MLflow's Flask side reads no chunked request body (its searches came back 400 and
        # its GraphQL 500, so the runs view stayed empty): a small body goes on with its length.
        body = await request.read()
    session = request.app[CLIENT]
    try:
        async with session.request(request.method, url, headers=headers, data=body,
                                   allow_redirects=False) as upstream:  # fmt: skip
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _NOT_RETURNED:
                    response.headers.add(key, value)
            if upstream.content_length is not None and request.method != "HEAD":
                response.content_length = upstream.content_length
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
            return response
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise web.HTTPBadGateway(text=f"the UI did not answer: {type(exc).__name__}") from None
