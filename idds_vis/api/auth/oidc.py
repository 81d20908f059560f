"""The OIDC issuer, as the web app uses it: discovery, the JWKS, token verification (PyJWT),
and the authorization-code flow with PKCE for browsers.

Verification checks the signature against the issuer's JWKS (asymmetric algorithms only, so
``alg: none`` and an HMAC signed with a public key are refused), the issuer, the audience,
the expiry and not-before. Like panda-server (``oidc_utils.TokenDecoder``) the discovery
document and the JWKS are cached and read again every 10 minutes; a token signed with a key
id not in the cache makes one early re-read (the issuer rotated its keys), at most every 30 s,
so forged key ids cannot make the app hammer the issuer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp
import jwt

log = logging.getLogger(__name__)

# Asymmetric only: a JWKS never legitimately holds the shared secret an HS* token needs.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"})  # fmt: skip
REFRESH_SECONDS = 600.0
MISSING_KID_RETRY_SECONDS = 30.0
# Clocks of the issuer and of this server may differ a little.
LEEWAY_SECONDS = 30


class TokenRefused(Exception):
    """A token that does not verify; the message says why (never the token)."""


class IssuerUnreachable(Exception):
    """The issuer's discovery document, JWKS or token endpoint cannot be read."""


def s256(verifier: str) -> str:
    """RFC 7636's S256 code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (RFC 7636: 43-128 unreserved characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def check_issuer_url(url: str) -> None:
    """https, or plain http to loopback only (a local issuer in tests and demos)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parts.scheme != "http" or not loopback:
        raise ValueError(f"OIDC issuer {url!r} must be https (plain http only on loopback)")


@dataclass(frozen=True)
class Endpoints:
    issuer: str
    authorization: str
    token: str
    jwks_uri: str
    end_session: str | None = None


class OidcClient:
    def __init__(
        self,
        issuer: str,
        *,
        client_id: str | None,
        client_secret: str | None = None,
        audiences: Collection[str] = (),
        timeout: float = 10.0,
    ) -> None:
        check_issuer_url(issuer)
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        # Bearer tokens for this service: ID tokens of its own client, or access tokens
        # issued for one of the configured audiences.
        self.audiences = tuple(dict.fromkeys([*audiences, *([client_id] if client_id else [])]))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._endpoints: Endpoints | None = None
        self._endpoints_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session().get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise IssuerUnreachable(f"{url} answered HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IssuerUnreachable(f"cannot read {url}: {exc}") from None
        if not isinstance(body, dict):
            raise IssuerUnreachable(f"{url} did not answer a JSON object")
        return body

    async def endpoints(self) -> Endpoints:
        now = time.monotonic()
        if self._endpoints is not None and now - self._endpoints_at < REFRESH_SECONDS:
            return self._endpoints
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url)
        try:
            found = Endpoints(
                issuer=str(doc["issuer"]),
                authorization=str(doc["authorization_endpoint"]),
                token=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                end_session=doc.get("end_session_endpoint"),
            )
        except KeyError as exc:
            raise IssuerUnreachable(f"{url} names no {exc.args[0]}") from None
        if found.issuer.rstrip("/") != self.issuer.rstrip("/"):
            # OIDC Discovery §4.3: the document must be the configured issuer's own.
            raise IssuerUnreachable(f"{url} is the discovery document of {found.issuer!r}")
        self._endpoints, self._endpoints_at = found, now
        return found

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        async with self._lock:
            now = time.monotonic()
            stale = now - self._keys_at >= REFRESH_SECONDS
            unknown = kid not in self._keys and now - self._keys_at >= MISSING_KID_RETRY_SECONDS
            if not self._keys or stale or unknown:
                endpoints = await self.endpoints()
                try:
                    keyset = jwt.PyJWKSet.from_dict(await self._get_json(endpoints.jwks_uri))
                except jwt.PyJWTError as exc:
                    raise IssuerUnreachable(f"the issuer's JWKS is unusable: {exc}") from None
                self._keys = {
                    str(k.key_id): k for k in keyset.keys if k.algorithm_name in ALGORITHMS
                }
                self._keys_at = now
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            if kid is None or kid not in self._keys:
                raise TokenRefused("signed with a key the issuer does not publish")
            return self._keys[kid]

    async def verify(
        self,
        token: str,
        *,
        audiences: Collection[str] | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """The token's claims, once its signature, issuer, audience, expiry and not-before
        check out; ``TokenRefused`` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("not a JSON Web Token") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRefused(f"algorithm {alg!r} is not accepted (signed tokens only)")
        key = await self._key(header.get("kid"))
        if key.algorithm_name != alg:
            raise TokenRefused(f"algorithm {alg!r} does not match the issuer's key")
        endpoints = await self.endpoints()
        accepted = list(audiences if audiences is not None else self.audiences)
        if not accepted:
            raise TokenRefused("this service accepts no audience (set oidc_client_id)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=accepted,
                issuer=endpoints.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_nbf": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is invalid: {exc}") from None
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise TokenRefused("the ID token's nonce is not the one this sign-in sent")
        return claims

    # -- the authorization-code flow with PKCE ----------------------------------------------
    async def authorization_url(
        self, redirect_uri: str, scopes: Collection[str], state: str, nonce: str, challenge: str
    ) -> str:
        if not self.client_id:
            raise IssuerUnreachable("no oidc_client_id is configured for browser sign-in")
        endpoints = await self.endpoints()
        query = urlencode({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        })  # fmt: skip
        sep = "&" if "?" in endpoints.authorization else "?"
        return f"{endpoints.authorization}{sep}{query}"

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> Mapping[str, Any]:
        """The token endpoint's answer to an authorization code (with the PKCE verifier)."""
        endpoints = await self.endpoints()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, "client_id": self.client_id or ""}  # fmt: skip
        headers = {"Accept": "application/json"}
        if self.client_secret is not None:
            # client_secret_basic, the default client authentication of OIDC Core §9; RFC 6749
            # §2.3.1 form-encodes both parts before base64.
            pair = f"{quote_plus(self.client_id or '')}:{quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            async with self._session().post(endpoints.token, data=form,
                                            headers=headers) as resp:
                body = await resp.json(content_type=None)  # fmt: skip
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IssuerUnreachable(f"cannot reach the token endpoint: {exc}") from None
        if status != 200 or not isinstance(body, dict):
            error = body.get("error_description") or body.get("error") if isinstance(
                body, dict) else None  # fmt: skip
            raise TokenRefused(f"the issuer refused the sign-in code: {error or status}")
        return body
