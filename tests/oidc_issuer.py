"""A real, small OIDC issuer on loopback for the login tests: discovery document, JWKS,
``/authorize`` (auto-approves its current user, remembers the PKCE challenge) and ``/token``
(authorization code with the PKCE verifier checked, and client credentials for robots).
It signs with its own RSA key (PyJWT); helpers mint the good and the bad tokens the tests use.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "idds-vis"
CLIENT_SECRET = "s3cret-of-the-web-app"
ROBOT_ID = "idds-robot"
ROBOT_SECRET = "s3cret-of-the-robot"
AUDIENCE = "https://idds-vis.example.org"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    url: str = ""
    key: rsa.RSAPrivateKey = field(default_factory=_key)
    kid: str = field(default_factory=lambda: secrets.token_hex(4))
    # The person /authorize signs in (the test changes it to sign in someone else).
    user: dict[str, Any] = field(default_factory=lambda: {
        "sub": "0f1e2d3c-jane", "name": "jane doe", "preferred_username": "jdoe",
        "email": "jane.doe@example.org", "groups": ["atlas"],
    })  # fmt: skip
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET,
                                                             ROBOT_ID: ROBOT_SECRET})
    redirect_uris: set[str] = field(default_factory=set)  # empty: any loopback URI
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_challenges: list[str] = field(default_factory=list)
    verifier_checks: list[bool] = field(default_factory=list)

    # -- tokens -------------------------------------------------------------------------------
    def jwk(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.url, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 3600,
                **self.user}  # fmt: skip
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, **overrides: Any) -> str:
        """A good access token for the app's audience (change any claim with a keyword)."""
        return jwt.encode(self.claims(**overrides), self.key, algorithm="RS256",
                          headers={"kid": self.kid})  # fmt: skip

    def forged(self, **overrides: Any) -> str:
        """Same claims and key id, signed with a key the issuer never published."""
        return jwt.encode(self.claims(**overrides), _key(), algorithm="RS256",
                          headers={"kid": self.kid})  # fmt: skip

    def unsigned(self, **overrides: Any) -> str:
        """``alg: none``: claims with no signature at all."""
        return jwt.encode(self.claims(**overrides), None, algorithm="none",
                          headers={"kid": self.kid})  # fmt: skip

    def robot_token(self, client_id: str = ROBOT_ID) -> str:
        """What client_credentials gives a robot: no person, its client id."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": client_id, "client_id": client_id,
                  "iat": now, "exp": now + 3600}  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    # -- the endpoints ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
        })  # fmt: skip

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.jwk()]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") not in self.clients or q.get("response_type") != "code":
            return web.json_response({"error": "unauthorized_client"}, status=400)
        redirect = q.get("redirect_uri", "")
        if self.redirect_uris and redirect not in self.redirect_uris:
            return web.json_response({"error": "invalid_request"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request",
                                      "error_description": "PKCE S256 is required"}, status=400)
        self.seen_challenges.append(q["code_challenge"])
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"client_id": q["client_id"], "redirect_uri": redirect,
                            "challenge": q["code_challenge"], "nonce": q.get("nonce"),
                            "user": dict(self.user)}  # fmt: skip
        query = urlencode({"code": code, "state": q.get("state", "")})
        raise web.HTTPFound(f"{redirect}?{query}")

    def _client(self, request: web.Request, form: Any) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id if self.clients.get(client_id) == secret else None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client = self._client(request, form)
        if client is None:
            return web.json_response({"error": "invalid_client"}, status=401)
        now = int(time.time())
        if form.get("grant_type") == "client_credentials":
            return web.json_response({"access_token": self.robot_token(client),
                                      "token_type": "Bearer", "expires_in": 3600})  # fmt: skip
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        grant = self.codes.pop(str(form.get("code", "")), None)
        if grant is None or grant["client_id"] != client \
                or grant["redirect_uri"] != form.get("redirect_uri"):  # fmt: skip
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        ok = base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == grant["challenge"]
        self.verifier_checks.append(ok)
        if not ok:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "PKCE verification failed"},
                                     status=400)  # fmt: skip
        id_claims = {"iss": self.url, "aud": client, "iat": now, "exp": now + 3600,
                     "nonce": grant["nonce"], **grant["user"]}  # fmt: skip
        id_token = jwt.encode(id_claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        access = self.token(**grant["user"])
        return web.json_response({"access_token": access, "id_token": id_token,
                                  "token_type": "Bearer", "expires_in": 3600})  # fmt: skip


@asynccontextmanager
async def running_issuer() -> AsyncIterator[Issuer]:
    """An issuer listening on a free loopback port until the block ends."""
    issuer = Issuer()
    runner = web.AppRunner(issuer.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    issuer.url = f"http://{host}:{port}"
    try:
        yield issuer
    finally:
        await runner.cleanup()
