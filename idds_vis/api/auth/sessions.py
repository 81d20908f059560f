"""The browser's session: an encrypted cookie (aiohttp-session's Fernet storage), HttpOnly,
Secure and SameSite=Lax, holding the signed-in identity and its CSRF token.

Lax, not Strict: the issuer sends the browser back to ``/auth/callback`` with a cross-site
top-level GET, which must carry the cookie holding the sign-in's state and PKCE verifier. Lax
cookies are never sent on cross-site POSTs or fetches, and every state-changing request made
with the cookie must also carry the CSRF token (``X-CSRF-Token``, or a ``csrf_token`` field),
which only a page of this app can read.

The cookie is encrypted and authenticated with one Fernet key (``session_key_file``), whose
timestamp also bounds the session's lifetime; replicas behind one address share the key.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from idds_vis.api.auth.config import AuthConfig
from idds_vis.domain.identity import Identity

log = logging.getLogger(__name__)
COOKIE = "idds_vis_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def storage(config: AuthConfig) -> EncryptedCookieStorage:
    key = config.session_key
    if key is None:
        # Sessions then end with the process, and another replica cannot read them.
        log.warning("no session_key_file: browser sessions last until this process stops")
        key = Fernet.generate_key()
    return EncryptedCookieStorage(
        Fernet(key),
        cookie_name=COOKIE,
        max_age=int(config.session_lifetime.total_seconds()),
        httponly=True,
        secure=True,
        samesite="Lax",
    )


def identity_of(session: Session) -> Identity | None:
    data = session.get("identity")
    if not isinstance(data, dict):
        return None
    return Identity(
        user=str(data["user"]),
        subject=str(data["subject"]),
        groups=frozenset(data.get("groups", [])),
        production=bool(data.get("production")),
        client_id=data.get("client_id"),
        email=data.get("email"),
    )


async def sign_in(request: web.Request, identity: Identity) -> Session:
    """A fresh session (a new cookie: no session fixation) for the signed-in identity."""
    session = await new_session(request)
    session["identity"] = {**identity.as_json(), "email": identity.email}
    session["csrf"] = secrets.token_urlsafe(32)
    return session


async def csrf_token(request: web.Request) -> str | None:
    session = await get_session(request)
    token: Any = session.get("csrf")
    return token if isinstance(token, str) else None


async def csrf_ok(request: web.Request) -> bool:
    expected = await csrf_token(request)
    if not expected:
        return False
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                 "multipart/form-data"):  # fmt: skip
        field = (await request.post()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    return sent is not None and secrets.compare_digest(sent, expected)
