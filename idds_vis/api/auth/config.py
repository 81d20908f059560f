"""What the web app's login needs, built once from the settings: the issuer, how claims become
an identity, which reads need one, and the session and rate-limit parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from idds_vis.api.auth.dev_sign_in import check_settings
from idds_vis.api.auth.oidc import OidcClient
from idds_vis.domain.identity import Identity, identity_from_claims
from idds_vis.runtime.config import Settings


@dataclass
class AuthConfig:
    oidc: OidcClient | None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    jwt_profile: str = "default"
    robot_clients: frozenset[str] = frozenset()
    production_groups: frozenset[str] = frozenset()
    # Reads of a task's JSON and of the catalog need a signed-in identity (as PanDA's reads do).
    reads_need_identity: bool = False
    # ...except the monitor's JSON, when the BigPanDA snippet must read it anonymously.
    public_task_json: bool = False
    session_key: bytes | None = None
    session_lifetime: timedelta = timedelta(hours=12)
    rate_limit: str = "120/minute"
    # Issue 19: sign in under any name on loopback, no issuer (auth/dev_sign_in.py).
    dev_sign_in: bool = False

    @property
    def login(self) -> bool:
        return self.oidc is not None or self.dev_sign_in

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        known = [self.oidc.client_id] if self.oidc and self.oidc.client_id else []
        return identity_from_claims(
            claims,
            jwt_profile=self.jwt_profile,
            robot_clients=self.robot_clients,
            production_groups=self.production_groups,
            known_clients=known,
        )


AUTH = web.AppKey("auth", AuthConfig)


def _read_secret(path: str | None) -> str | None:
    if not path:
        return None
    return Path(path).expanduser().read_text().strip() or None


def auth_config(settings: Settings) -> AuthConfig:
    """Login is off (everything as before issue 6) unless ``oidc_issuer`` (or, to try it on one
    machine, ``dev_sign_in``) is set."""
    check_settings(settings)
    oidc = None
    if settings.oidc_issuer:
        oidc = OidcClient(
            settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=_read_secret(settings.oidc_client_secret_file),
            audiences=settings.oidc_audience,
        )
    reads = settings.auth_required_for_reads
    login = oidc is not None or settings.dev_sign_in
    key = _read_secret(settings.session_key_file)
    return AuthConfig(
        oidc=oidc,
        scopes=tuple(settings.oidc_scopes),
        jwt_profile=settings.oidc_jwt_profile,
        robot_clients=frozenset(settings.oidc_robot_clients),
        production_groups=frozenset(settings.production_groups),
        reads_need_identity=login if reads is None else bool(reads and login),
        public_task_json=settings.public_task_json,
        session_key=key.encode() if key else None,
        session_lifetime=settings.session_lifetime,
        rate_limit=settings.rate_limit,
        dev_sign_in=settings.dev_sign_in,
    )
