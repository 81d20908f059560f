"""Credentials for artefact sources: read from files named in the settings (the agent), or from
the environment a Kubernetes Secret gives the UI pod; never shown in a log or an error."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from idds_vis.domain.errors import StagingError
from idds_vis.staging.sources import HttpSource, RucioSource, S3Source, parse_source


class Secret:
    """A credential value whose str() and repr() never show it; ``reveal()`` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class S3Access:
    endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph RGW); None: AWS
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None

    @property
    def signed(self) -> bool:
        return self.access_key_id is not None and self.secret_access_key is not None


RUCIO_AUTH_TYPES = ("userpass", "oidc", "x509_proxy")


@dataclass(frozen=True)
class RucioAccess:
    """What the Rucio client needs; files it wants (proxy, CA) are held as their contents, so the
    same values travel to a UI pod."""

    host: str
    auth_host: str
    account: str
    auth_type: str = "userpass"
    vo: str | None = None
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None  # auth_type oidc: a bearer token (WLCG token discovery)
    x509_proxy: Secret | None = None
    ca_cert: str | None = None  # PEM; None: the client's default CA bundle
    rse: str | None = None  # an RSE expression to download from


@dataclass(frozen=True)
class Credentials:
    http_tokens: Mapping[str, Secret] = field(default_factory=dict)  # host -> bearer token
    s3: S3Access | None = None
    rucio: RucioAccess | None = None

    def http_token_for(self, url: str) -> Secret | None:
        """The bearer token configured for the URL's host; never over plain http beyond loopback."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return None
        token = self.http_tokens.get(host)
        if token is None:
            return None
        if parts.scheme.lower() == "https" or _is_loopback(host):
            return token
        raise StagingError(
            f"a token is configured for {host}, but the source URL is plain http:"
            " use https so that the token is not sent in clear"
        )

    def secret_values(self) -> list[str]:
        """Every secret's text, longest first, for scrubbing text that came from elsewhere."""
        found: list[Secret | None] = list(self.http_tokens.values())
        if self.s3 is not None:
            found += [self.s3.access_key_id, self.s3.secret_access_key]
        if self.rucio is not None:
            found += [self.rucio.password, self.rucio.token, self.rucio.x509_proxy]
        values = {s.reveal() for s in found if s is not None and s.reveal()}
        return sorted(values, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.secret_values():
            text = text.replace(value, "***")
        return text

    def pod_env(self, source: str) -> dict[str, str] | None:
        """The environment a UI pod staging ``source`` itself needs (a Secret's values), exactly
        those and no more; None when the source needs none."""
        try:
            parsed = parse_source(source)
        except StagingError:
            return None
        env: dict[str, str | None] = {}
        if isinstance(parsed, HttpSource):
            token = self.http_token_for(parsed.url)
            if token is not None:
                env[_HTTP_HOST] = (urlsplit(parsed.url).hostname or "").lower()
                env[_HTTP_TOKEN] = token.reveal()
        elif isinstance(parsed, S3Source) and self.s3 is not None:
            env.update({
                "IDDS_VIS_S3_ENDPOINT_URL": self.s3.endpoint_url,
                "IDDS_VIS_S3_REGION": self.s3.region,
                "IDDS_VIS_S3_ACCESS_KEY_ID": _text(self.s3.access_key_id),
                "IDDS_VIS_S3_SECRET_ACCESS_KEY": _text(self.s3.secret_access_key),
            })  # fmt: skip
        elif isinstance(parsed, RucioSource) and self.rucio is not None:
            r = self.rucio
            env.update({
                "IDDS_VIS_RUCIO_HOST": r.host, "IDDS_VIS_RUCIO_AUTH_HOST": r.auth_host,
                "IDDS_VIS_RUCIO_ACCOUNT": r.account, "IDDS_VIS_RUCIO_AUTH_TYPE": r.auth_type,
                "IDDS_VIS_RUCIO_VO": r.vo, "IDDS_VIS_RUCIO_USERNAME": r.username,
                "IDDS_VIS_RUCIO_PASSWORD": _text(r.password),
                "IDDS_VIS_RUCIO_TOKEN": _text(r.token),
                "IDDS_VIS_RUCIO_X509_PROXY": _text(r.x509_proxy),
                "IDDS_VIS_RUCIO_CA_CERT": r.ca_cert, "IDDS_VIS_RUCIO_RSE": r.rse,
            })  # fmt: skip
        kept = {k: v for k, v in env.items() if v}
        return kept or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials:
        """The inverse of pod_env: what ``idds-vis serve-ui`` in a UI pod stages with."""
        get = environ.get
        tokens = {}
        if get(_HTTP_HOST) and get(_HTTP_TOKEN):
            tokens[environ[_HTTP_HOST].lower()] = Secret(environ[_HTTP_TOKEN])
        s3 = None
        if any(k.startswith("IDDS_VIS_S3_") for k in environ):
            s3 = S3Access(
                endpoint_url=get("IDDS_VIS_S3_ENDPOINT_URL"),
                region=get("IDDS_VIS_S3_REGION"),
                access_key_id=_secret(get("IDDS_VIS_S3_ACCESS_KEY_ID")),
                secret_access_key=_secret(get("IDDS_VIS_S3_SECRET_ACCESS_KEY")),
            )
        rucio = None
        host, auth_host, account = (
            get("IDDS_VIS_RUCIO_HOST"), get("IDDS_VIS_RUCIO_AUTH_HOST"),
            get("IDDS_VIS_RUCIO_ACCOUNT"),
        )  # fmt: skip
        if host and auth_host and account:
            rucio = RucioAccess(
                host=host, auth_host=auth_host, account=account,
                auth_type=get("IDDS_VIS_RUCIO_AUTH_TYPE") or "userpass",
                vo=get("IDDS_VIS_RUCIO_VO"), username=get("IDDS_VIS_RUCIO_USERNAME"),
                password=_secret(get("IDDS_VIS_RUCIO_PASSWORD")),
                token=_secret(get("IDDS_VIS_RUCIO_TOKEN")),
                x509_proxy=_secret(get("IDDS_VIS_RUCIO_X509_PROXY")),
                ca_cert=get("IDDS_VIS_RUCIO_CA_CERT"), rse=get("IDDS_VIS_RUCIO_RSE"),
            )  # fmt: skip
        return cls(http_tokens=tokens, s3=s3, rucio=rucio)


_HTTP_HOST = "IDDS_VIS_HTTP_TOKEN_HOST"
_HTTP_TOKEN = "IDDS_VIS_HTTP_TOKEN"
ENV_PREFIXES = ("IDDS_VIS_HTTP_TOKEN", "IDDS_VIS_S3_", "IDDS_VIS_RUCIO_")


def without_credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus every credential variable (for processes that must not see them)."""
    return {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIXES)}


@dataclass(frozen=True)
class CredentialFiles:
    """The settings' view: plain values, and the FILES the secrets are in. ``load()`` reads them
    at each staging, so a rotated token is picked up without a restart."""

    http_token_files: Mapping[str, str] = field(default_factory=dict)  # host -> token file
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_file: str | None = None
    s3_secret_key_file: str | None = None
    rucio_host: str | None = None
    rucio_auth_host: str | None = None
    rucio_account: str | None = None
    rucio_auth_type: str = "userpass"
    rucio_vo: str | None = None
    rucio_username: str | None = None
    rucio_password_file: str | None = None
    rucio_token_file: str | None = None
    rucio_x509_proxy_file: str | None = None
    rucio_ca_cert: str | None = None
    rucio_rse: str | None = None

    def load(self) -> Credentials:
        """Blocking file reads: call it in a thread from async code."""
        tokens = {
            h.lower(): _read(p, f"bearer token for {h}") for h, p in self.http_token_files.items()
        }
        s3 = None
        if (
            self.s3_endpoint_url
            or self.s3_region
            or self.s3_access_key_file
            or self.s3_secret_key_file
        ):
            if bool(self.s3_access_key_file) != bool(self.s3_secret_key_file):
                raise StagingError(
                    "S3 needs both s3_access_key_file and s3_secret_key_file, or neither"
                )
            s3 = S3Access(
                endpoint_url=self.s3_endpoint_url,
                region=self.s3_region,
                access_key_id=_read_opt(self.s3_access_key_file, "S3 access key"),
                secret_access_key=_read_opt(self.s3_secret_key_file, "S3 secret key"),
            )
        return Credentials(http_tokens=tokens, s3=s3, rucio=self._rucio())

    def _rucio(self) -> RucioAccess | None:
        if not (self.rucio_host or self.rucio_account):
            return None
        if not (self.rucio_host and self.rucio_account):
            raise StagingError("Rucio needs rucio_host and rucio_account")
        if self.rucio_auth_type not in RUCIO_AUTH_TYPES:
            raise StagingError(
                f"rucio_auth_type '{self.rucio_auth_type}' is not one of"
                f" {', '.join(RUCIO_AUTH_TYPES)}"
            )
        ca = None
        if self.rucio_ca_cert:
            try:
                ca = Path(self.rucio_ca_cert).read_text()
            except OSError as exc:
                raise StagingError(
                    f"cannot read the Rucio CA file {self.rucio_ca_cert}: {exc.strerror}"
                ) from None
        return RucioAccess(
            host=self.rucio_host,
            auth_host=self.rucio_auth_host or self.rucio_host,
            account=self.rucio_account,
            auth_type=self.rucio_auth_type,
            vo=self.rucio_vo,
            username=self.rucio_username,
            password=_read_opt(self.rucio_password_file, "Rucio password"),
            token=_read_opt(self.rucio_token_file, "Rucio token"),
            x509_proxy=_read_opt(self.rucio_x509_proxy_file, "X.509 proxy", strip=False),
            ca_cert=ca,
            rse=self.rucio_rse,
        )


def _read(path: str, what: str, *, strip: bool = True) -> Secret:
    # The reason names the file and the OS error, never a byte of its content.
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise StagingError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise StagingError(f"the {what} file {path} is not text") from None
    value = text.strip() if strip else text
    if not value.strip():
        raise StagingError(f"the {what} file {path} is empty")
    return Secret(value)


def _read_opt(path: str | None, what: str, *, strip: bool = True) -> Secret | None:
    return _read(path, what, strip=strip) if path else None


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


def _text(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
