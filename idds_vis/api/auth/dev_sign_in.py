"""The development sign-in (issue 19): try the catalog on one machine with no OIDC issuer, like
JupyterHub's DummyAuthenticator. Anyone who can reach the page may sign in under any name and
groups, so it is fenced in three ways:

- it refuses to start unless the web app listens on a loopback address (``web_host``) and no
  issuer is configured (``check_settings``, one line at start-up);
- every request must come from a loopback peer, through no proxy, for a loopback host name
  (a page on another site that makes a browser talk to 127.0.0.1 under its own name, DNS
  rebinding, is refused too) — ``loopback_only``, the first middleware after the proxies';
- every page says so in a banner (the templates' ``dev_sign_in``).
"""

from __future__ import annotations

import ipaddress
import re

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.identity import Identity
from idds_vis.runtime.config import Settings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
REFUSED = "this idds-vis runs the development sign-in: it answers this machine (loopback) only"


def is_loopback(host: str | None) -> bool:
    """A loopback address, or the name ``localhost``."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> None:
    """Refuse a start that would put the development sign-in where others can reach it."""
    if not settings.dev_sign_in:
        return
    if settings.oidc_issuer:
        raise InvalidRequest("dev_sign_in and oidc_issuer are both set: choose one")
    if not is_loopback(settings.web_host):
        raise InvalidRequest(
            f"dev_sign_in needs a loopback web_host (127.0.0.1, ::1 or localhost), not "
            f"{settings.web_host!r}: anyone who reaches it could sign in as anyone"
        )


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    raw = peer[0] if isinstance(peer, tuple) and peer else None
    host = URL(f"http://{request.host}").host if request.host else None
    forwarded = any(h in request.headers for h in ("Forwarded", "X-Forwarded-For"))
    if forwarded or not (is_loopback(raw) and is_loopback(request.remote) and is_loopback(host)):
        raise web.HTTPForbidden(text=REFUSED)
    return await handler(request)


def install(app: web.Application) -> None:
    """Loopback clients only (right after the proxies' middleware), a banner on every page."""
    app.middlewares.insert(1, loopback_only)
    aiohttp_jinja2.get_env(app).globals["dev_sign_in"] = True  # base.html shows the banner


def identity(user: str, groups_text: str, production_groups: frozenset[str]) -> Identity:
    """The identity a development sign-in form asks for; a one-line refusal for bad names."""
    user = user.strip()
    if not NAME.fullmatch(user):
        raise InvalidRequest("a user name is 1-64 letters, digits and . _ @ - (e.g. jdoe)")
    groups = frozenset(g.strip().strip("/") for g in groups_text.split(",") if g.strip())
    for group in groups:
        if not GROUP.fullmatch(group):
            raise InvalidRequest(f"{group!r} is not a group name (e.g. atlas/ml)")
    return Identity(
        user=user,
        subject=f"dev-sign-in:{user}",
        groups=groups,
        production=bool(groups & {g.strip("/") for g in production_groups}),
    )
