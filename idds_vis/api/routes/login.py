"""Browser sign-in: the OIDC authorization-code flow with PKCE, ending in the session cookie.

``GET /auth/login?next=/catalog`` keeps a fresh state, nonce and PKCE verifier in the session
and sends the browser to the issuer; ``GET /auth/callback`` checks the state, trades the code
(with the verifier) for tokens, verifies the ID token (signature, issuer, audience = our client
id, expiry, nonce) and starts a new session for that identity; ``POST /auth/logout`` ends it.
``GET /api/v1/me`` says who the caller is (bearer or session) and gives a page its CSRF token.

With ``dev_sign_in`` (no issuer, loopback only: ``auth/dev_sign_in.py``) ``GET /auth/login``
shows a form asking for a user name and groups, and ``POST /auth/login`` starts the session.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from idds_vis.api.auth import dev_sign_in
from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.middleware import VIA, identity
from idds_vis.api.auth.oidc import IssuerUnreachable, TokenRefused, pkce_pair
from idds_vis.api.auth.sessions import csrf_token, sign_in
from idds_vis.api.urls import public_base, root
from idds_vis.domain.errors import InvalidRequest

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def _safe_next(request: web.Request, wanted: str | None) -> str:
    """Only a path of this app: never another site (an open redirect)."""
    parts = urlsplit(wanted or "")
    if not wanted or parts.scheme or parts.netloc or not wanted.startswith("/") \
            or wanted.startswith("//") or "\\" in wanted:  # fmt: skip
        return f"{root(request)}/catalog"
    return wanted


def _callback(request: web.Request) -> str:
    return f"{public_base(request)}/auth/callback"


def _failed(request: web.Request, why: str, status: int) -> web.Response:
    context = {"root": root(request), "headline": "Sign-in failed", "detail": why,
               "login_url": f"{root(request)}/auth/login"}  # fmt: skip
    return aiohttp_jinja2.render_template("signin_failed.html", request, context, status=status)


async def _dev_form(request: web.Request, after: str, error: str = "", status: int = 200,
              user: str = "", groups: str = "") -> web.Response:  # fmt: skip
    context = {"root": root(request), "next": after, "error": error, "user": user,
               "groups": groups, "csrf": await csrf_token(request) or ""}  # fmt: skip
    response = aiohttp_jinja2.render_template("dev_signin.html", request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.post("/auth/login")
async def dev_login(request: web.Request) -> web.StreamResponse:
    """The development sign-in's form: any name and groups (loopback only, see the module)."""
    config = request.app[AUTH]
    if not config.dev_sign_in:
        raise web.HTTPNotFound(text="sign-in is not configured on this idds-vis")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    after = _safe_next(request, fields.get("next"))
    try:
        who = dev_sign_in.identity(fields.get("user", ""), fields.get("groups", ""),
                                   config.production_groups)  # fmt: skip
    except InvalidRequest as exc:
        return await _dev_form(request, after, exc.reason, 400, fields.get("user", ""),
                         fields.get("groups", ""))  # fmt: skip
    await sign_in(request, who)
    log.info("%s signed in with the development sign-in (groups: %s)", who.user,
             ", ".join(sorted(who.groups)) or "none")  # fmt: skip
    raise web.HTTPSeeOther(after)


@routes.get("/auth/login")
async def login(request: web.Request) -> web.StreamResponse:
    if request.app[AUTH].dev_sign_in:
        return await _dev_form(request, _safe_next(request, request.query.get("next")))
    oidc = request.app[AUTH].oidc
    if oidc is None:
        raise web.HTTPNotFound(text="sign-in is not configured on this idds-vis")
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        url = await oidc.authorization_url(_callback(request), request.app[AUTH].scopes, state,
                                           nonce, challenge)  # fmt: skip
    except IssuerUnreachable as exc:
        return _failed(request, f"the identity provider cannot be reached: {exc}", 503)
    session = await get_session(request)
    session["login"] = {"state": state, "nonce": nonce, "verifier": verifier,
                        "next": _safe_next(request, request.query.get("next"))}  # fmt: skip
    raise web.HTTPFound(url)


@routes.get("/auth/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    config = request.app[AUTH]
    if config.oidc is None:
        raise web.HTTPNotFound(text="sign-in is not configured on this idds-vis")
    session = await get_session(request)
    pending = session.pop("login", None)
    if not isinstance(pending, dict):
        return _failed(request, "this sign-in was not started here, or has already been used",
                       400)  # fmt: skip
    if "error" in request.query:
        why = request.query.get("error_description") or request.query["error"]
        return _failed(request, f"the identity provider said: {why}", 400)
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if not code or not secrets.compare_digest(state, str(pending["state"])):
        return _failed(request, "the sign-in's state does not match: start again", 400)
    try:
        tokens = await config.oidc.exchange(code, str(pending["verifier"]), _callback(request))
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise TokenRefused("the identity provider sent no ID token (is 'openid' a scope?)")
        claims = await config.oidc.verify(
            id_token, audiences=[config.oidc.client_id or ""], nonce=str(pending["nonce"])
        )
    except TokenRefused as exc:
        log.info("sign-in refused: %s", exc)
        return _failed(request, str(exc), 401)
    except IssuerUnreachable as exc:
        return _failed(request, f"the identity provider cannot be reached: {exc}", 503)
    who = config.identity(claims)
    await sign_in(request, who)
    log.info("%s signed in (groups: %s)", who.user, ", ".join(sorted(who.groups)) or "none")
    raise web.HTTPSeeOther(str(pending["next"]))


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if request.app[AUTH].login:
        session = await get_session(request)
        session.invalidate()
    raise web.HTTPSeeOther(f"{root(request)}/catalog")


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    who = identity(request)
    body = {
        "identity": who.as_json() if who else None,
        "via": request.get(VIA, "anonymous"),
        "login": request.app[AUTH].login,
        "login_url": f"{root(request)}/auth/login" if request.app[AUTH].login else None,
        "csrf_token": await csrf_token(request) if request.get(VIA) == "session" else None,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})
