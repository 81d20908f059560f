"""Share links' tokens and cookies (issue 17; the rules are ``domain/share_links.py``).

The link is ``<web>/s/<token>``. The token is a JWT (HS256, PyJWT) the web app signs with a
key derived from its session key (``session_key_file``, shared by replicas), carrying the
share's id (``jti``), the UI's path token (``sub``) and the expiry (``exp``). A token whose
signature fails is refused without a look at the database; one that passes is then looked up
by its id and compared (constant time) with the SHA-256 the ledger keeps, and the record
decides: revoked, expired, another UI, a relaunched or ended UI. So revocation is immediate,
and a leaked signing key alone forges nothing.

Opening the link sets a cookie holding the token, scoped to that one UI's path
(``/vis/<path token>/``), HttpOnly, SameSite=Lax, Secure on https, living until the share or
the UI ends, whichever is first; the local proxy and ``/auth/check`` accept it for that UI
only, re-checking the record on every request. The token is never logged: logs and the audit
trail name the share's id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp_jinja2
import jwt
from aiohttp import web

from idds_vis.api.auth.config import AUTH
from idds_vis.api.auth.middleware import identity
from idds_vis.api.auth.ratelimit import RateLimiter
from idds_vis.api.keys import AGENT
from idds_vis.api.urls import public_base, root
from idds_vis.domain.models import Instance
from idds_vis.domain.share_links import SHARE_INVALID, Share, good_until, refusal
from idds_vis.ports.ledger import AccessLedger, ShareLedger

log = logging.getLogger(__name__)
COOKIE = "idds_vis_share"
ALGORITHM = "HS256"
SHARE_KEY = web.AppKey("share_key", bytes)
# Refused uses audited at most once a minute per share, reason, place and client.
REFUSALS_AUDITED = web.AppKey("share_refusals_audited", RateLimiter)
TOKEN_MAX = 1024  # a signed token of ours is about 200 characters
_SHARE_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY_CONTEXT = b"idds-vis share links v1"


def signing_key(app: web.Application) -> bytes:
    """The key share tokens are signed with: derived from the session key (so replicas that
    share it accept each other's links), else random for this process (links then end when
    it stops, as its sessions do)."""
    base = app[AUTH].session_key
    if base is None:
        log.warning("no session_key_file: share links last until this process stops")
        base = secrets.token_bytes(32)
    return derive_key(base)


def derive_key(session_key: bytes) -> bytes:
    """A key of its own for share links (HMAC of the session key): never the session key."""
    return hmac.new(session_key, _KEY_CONTEXT, hashlib.sha256).digest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign(key: bytes, share: Share) -> str:
    claims = {
        "jti": share.id,
        "sub": share.path_token,
        "iat": int(share.created_at.timestamp()),
        "exp": int(share.expires_at.timestamp()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def share_id_of(key: bytes, token: str) -> str | None:
    """The share id a token we signed carries; None for anything else (forged, altered, not a
    JWT, another algorithm). Expiry is the ledger's to decide, so it is not checked here."""
    if not token or len(token) > TOKEN_MAX:
        return None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "require": ["jti", "sub", "exp"]},
        )
    except jwt.InvalidTokenError:
        return None
    sid = claims.get("jti")
    return sid if isinstance(sid, str) and _SHARE_ID.match(sid) else None


def ledgers(app: web.Application) -> tuple[ShareLedger, AccessLedger]:
    ledger = app[AGENT].ledger
    if not isinstance(ledger, ShareLedger) or not isinstance(ledger, AccessLedger):
        raise web.HTTPNotImplemented(text="this ledger keeps no share links")
    return ledger, ledger


@dataclass(frozen=True)
class Checked:
    share: Share | None  # None: not a token of a share we know
    inst: Instance | None
    reason: str | None  # None: the share opens the UI now

    @property
    def allowed(self) -> bool:
        return self.reason is None


async def check(request: web.Request, token: str, segment: str | None) -> Checked:
    """What ``token`` opens: the UI at ``/vis/<segment>/`` (or, None, its own UI) or nothing."""
    sid = share_id_of(request.app[SHARE_KEY], token)
    if sid is None:
        return Checked(None, None, SHARE_INVALID)
    shares, _ = ledgers(request.app)
    share = await shares.get_share(sid)
    if share is None or not hmac.compare_digest(share.token_hash, token_hash(token)):
        return Checked(None, None, SHARE_INVALID)
    inst = await request.app[AGENT].ledger.get(share.key)
    now = request.app[AGENT].clock.now()
    return Checked(share, inst, refusal(share, inst, segment, now))


def actor(request: web.Request) -> str:
    who = identity(request)
    return who.user if who is not None else f"anonymous {request.remote or 'unknown'}"


async def audit_use(request: web.Request, checked: Checked, where: str) -> None:
    """One use of a share (``where``: "link", "proxy", "auth-check") in the audit trail,
    allowed or refused, naming the share by id and the client's address (never the token)."""
    share = checked.share
    address = request.remote or "unknown"
    if share is None:
        log.info("share link refused at %s: %s from %s", where, checked.reason, address)
        return
    _, access = ledgers(request.app)
    action = "share-use" if checked.allowed else "share-refused"
    detail = f"share {share.id} at {where} from {address}"
    if checked.reason is not None:
        detail += f": {checked.reason}"
    if not checked.allowed:
        # A refused cookie keeps coming back with each of the page's requests (at /auth/check,
        # where nginx cannot drop it): the first of a minute is recorded, every one counted.
        repeat = f"{share.id} {checked.reason} {where} {address}"
        if await request.app[REFUSALS_AUDITED].allow(repeat) is not None:
            log.debug("%s (again this minute): %s", action, detail)
            return
    log.info("%s: %s", action, detail)
    attempt = checked.inst.attempt if checked.inst is not None else None
    await access.record_action(actor(request), action, share.key,
                               request.app[AGENT].clock.now(), attempt=attempt,
                               detail=detail)  # fmt: skip


def ui_path(inst: Instance) -> str:
    """The path the UI answers under, as its public URL names it (``/vis/<path token>/``)."""
    path = urlsplit(inst.url).path if inst.url else ""
    return path if path.endswith("/") and "/vis/" in path else f"{inst.prefix}/"


def secure(request: web.Request) -> bool:
    return request.scheme == "https" or public_base(request).startswith("https:")


def set_cookie(response: web.StreamResponse, request: web.Request, token: str,
               share: Share, inst: Instance) -> None:  # fmt: skip
    left = int((good_until(share, inst) - request.app[AGENT].clock.now()).total_seconds())
    response.set_cookie(COOKIE, token, path=ui_path(inst), max_age=max(left, 0),
                        httponly=True, secure=secure(request), samesite="Lax")  # fmt: skip


def clear_cookie(response: web.StreamResponse, request: web.Request, path: str) -> None:
    response.del_cookie(COOKIE, path=path, secure=secure(request), httponly=True, samesite="Lax")


def refusal_page(request: web.Request, words: str, status: int = 403) -> web.Response:
    """The page a share link's holder sees when it no longer opens the UI."""
    response = aiohttp_jinja2.render_template(
        "share_refused.html", request,
        {"root": root(request), "detail": words, "login": request.app[AUTH].login},
        status=status,
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response
