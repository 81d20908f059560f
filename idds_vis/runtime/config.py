"""Settings, read from a YAML file (``--config`` / ``IDDS_VIS_CONFIG``) and the command line.

``Settings`` is a pydantic dataclass: every value is checked when settings are made (types,
ranges, choices), so a wrong setting stops a command at start with one line naming it, rather
than failing later, deep inside the agent. Each field's description is the configuration
reference (``idds_vis/runtime/config_reference.py`` renders it for the docs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, SkipValidation
from pydantic import ValidationError as PydanticValidationError
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from sqlalchemy.exc import ArgumentError

from idds_vis.deploy.kubernetes.settings import parse_egress
from idds_vis.domain.errors import InvalidRequest, VisError
from idds_vis.domain.expiry import DEFAULT_TTL, parse_duration
from idds_vis.domain.models import TOOLS
from idds_vis.ledger.urls import parse_async_url

DEFAULT_STATE_DIR = Path.home() / ".idds-vis"
MAX_CONFIG_BYTES = 1024 * 1024  # a settings file is a few KiB; more is a mistake


class SettingsError(InvalidRequest):
    """A setting is wrong, missing or unknown: ``str()`` is one line that names it.
    ``log_format`` is what the file asked for, when it could be read ("json", "text")."""

    log_format: str | None = None


def _duration(value: Any) -> Any:
    """Durations as people write them ("30m", "7d", "1h30m", a number of seconds)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a duration like 24h, 90m, 1h30m or 60s")
    try:
        return parse_duration(value)
    except VisError as exc:
        raise ValueError(str(exc)) from None


def _expand_home(value: Path) -> Path:
    return value.expanduser()


_NOT_A_URL = "not a database URL (write it like postgresql://user@host/db)"


def _ledger_url(value: str | None) -> str | None:
    """A URL the ledger can use (SQLite or PostgreSQL, or a bare path to a SQLite file)."""
    if value is not None:
        try:
            parse_async_url(value)
        except ValueError as exc:
            if str(exc).startswith("unsupported ledger URL"):
                raise
            raise ValueError(_NOT_A_URL) from None
        except ArgumentError:
            raise ValueError(_NOT_A_URL) from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is no number (pydantic would take it as 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Port = Annotated[Int, Field(ge=0, le=65535)]
Count = Annotated[Int, Field(ge=0)]
# Idle UI processes per tool: each holds ~200 MB doing nothing (docs/how-to/warm-pool.md);
# more than this is a typo (an extra zero), not a plan.
MAX_POOL = 32
PoolSize = Annotated[Int, Field(ge=0, le=MAX_POOL)]
# An idle member younger than this is never recycled: a shorter age than a member's start
# (seconds of MLflow's import) retired every member before any request could take it.
MIN_POOL_AGE = timedelta(minutes=1)


def _served_tool(value: str) -> str:
    if value not in TOOLS:
        raise ValueError(f"not a tool idds-vis serves ({', '.join(sorted(TOOLS))})")
    return value


def _pool_age(value: timedelta) -> timedelta:
    if value < MIN_POOL_AGE:
        raise ValueError("must be at least 1m (a member takes seconds to start)")
    return value


@dataclass(config=ConfigDict(extra="forbid"))
class Settings:
    state_dir: Annotated[Path, AfterValidator(_expand_home)] = Field(
        default=DEFAULT_STATE_DIR,
        description="Where the ledger (SQLite by default), staged data and UI logs "
        "(`instances/<name>/`) live.",
    )
    database_url: Annotated[str | None, AfterValidator(_ledger_url)] = Field(
        default=None,
        description="SQLAlchemy URL of the ledger; unset: SQLite in `state_dir` (one agent "
        "only). `postgresql+asyncpg://user@host/db` for PostgreSQL (several agents).",
    )
    deployer: Literal["local", "kubernetes"] = Field(
        default="local", description="Where UIs run: local processes, or Kubernetes objects."
    )
    bind_host: str = Field(default="127.0.0.1", description="Address local UIs listen on.")
    public_host: str = Field(
        default="127.0.0.1",
        description="Host name in the UIs' public URLs (also their allowed host).",
    )
    workers: Int = Field(default=4, ge=1, le=256, description="Pipeline workers in one agent.")
    default_ttl: Duration = Field(
        default=DEFAULT_TTL, description="A UI's lifetime once ready, when the request gives none."
    )
    max_ttl: Duration | None = Field(
        default=timedelta(days=7),
        description="Longest lifetime a request or an extension may ask for; null: no maximum.",
    )
    start_timeout: Duration = Field(
        default=timedelta(minutes=3),
        description="A UI that does not answer its readiness probe in time fails with that reason.",
    )
    max_bytes: Int = Field(
        default=2 * 1024**3, ge=1, description="Staging cap: bytes one source may bring."
    )
    max_files: Int = Field(
        default=20_000, ge=1, description="Staging cap: files one source may bring."
    )
    reconcile_interval: Duration = Field(
        default=timedelta(minutes=1),
        description="How often the ledger is compared with the UIs that really run.",
    )
    # deployer: kubernetes
    namespace: str = Field(
        default="default",
        description="With `deployer: kubernetes`: the agent's namespace (its Lease lives there).",
    )
    ui_namespace: str | None = Field(
        default=None,
        description="With `deployer: kubernetes`: where the UIs' objects go (a namespace of "
        "their own); null: `namespace`.",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="With `deployer: kubernetes`: a kubeconfig file; null: the in-cluster "
        "service account.",
    )
    ui_image: str = Field(
        default="idds-vis-ui:0.1.0",
        description="With `deployer: kubernetes`: the image UI pods run.",
    )
    exposure: Literal["ingress", "route"] = Field(
        default="ingress",
        description="With `deployer: kubernetes`: how UIs are reached, an Ingress or an "
        "OpenShift Route.",
    )
    ingress_class: str | None = Field(
        default="nginx",
        description="With `exposure: ingress`: the Ingress class; null: the cluster's default.",
    )
    # Checked when the deployer is built (idds_vis.deploy.kubernetes.settings.parse_egress),
    # with reasons naming the entry; load_settings checks it at start too.
    ui_egress: Annotated[list[dict[str, Any]], SkipValidation] = Field(
        default_factory=list,
        description="With `deployer: kubernetes`: where UI pods may connect besides cluster "
        'DNS, a list of `{cidr, except, ports}` (ports like `443` or `"53/UDP"`; none: every '
        "port). UI pods stage their source themselves: list the artefact servers. Default: "
        "none is reachable.",
    )
    # STOMP intake
    stomp_hosts: list[str] = Field(
        default_factory=list,
        description="STOMP 1.2 brokers as `host:port`; the agent consumes them when set "
        "(intake off when empty).",
    )
    stomp_subscriptions: list[str] = Field(
        default_factory=list,
        description="Topics, or `/queue/Consumer.idds-vis.VirtualTopic.X` queues so several "
        "agents share one stream.",
    )
    stomp_user: str | None = Field(default=None, description="Broker user name.")
    stomp_password: str | None = Field(
        default=None, description="Broker password (kept out of every log line)."
    )
    stomp_dead_letter: str = Field(
        default="/queue/idds-vis.DLQ",
        description="Where malformed messages go, with the reason in the `idds-vis-reason` header.",
    )
    stomp_relay_queue: str | None = Field(
        default="/queue/idds-vis.intake",
        description="What the subscriptions do not ignore is copied here and read back, so the "
        "stream itself is acked cumulatively; one per deployment. null: read the "
        "subscriptions directly, one ack per message.",
    )
    stomp_prefetch: Int = Field(
        default=1000, ge=1, description="Unacked messages the broker hands over per subscription."
    )
    stomp_relay_prefetch: Int = Field(
        default=100, ge=1, description="Unacked messages the broker hands over on the relay queue."
    )
    # iDDS
    idds_host: str | None = Field(
        default=None,
        description="iDDS REST server whose transforms and workflows are read "
        "(`work_processing` messages), e.g. `https://idds.example.org:443/idds`.",
    )
    idds_auth_type: Literal["x509_proxy", "oidc"] = Field(
        default="x509_proxy", description="How the agent authenticates to iDDS."
    )
    idds_x509_proxy: str | None = Field(default=None, description="An x509 proxy file for iDDS.")
    idds_oidc_token_file: str | None = Field(
        default=None, description="A file holding the OIDC token for iDDS."
    )
    idds_vo: str | None = Field(default=None, description="The VO sent to iDDS.")
    # PanDA
    panda_url: str | None = Field(
        default=None,
        description="panda-server to read task parameters from (`task_status` messages, the "
        "permalink), e.g. `https://pandaserver.cern.ch:25443`.",
    )
    panda_auth: Literal["oidc", "x509"] = Field(
        default="oidc", description="How the agent authenticates to PanDA."
    )
    panda_token_file: str | None = Field(
        default=None, description="A file holding an ID token for PanDA, read at every call."
    )
    panda_vo: str | None = Field(default=None, description="The VO sent to PanDA, e.g. `atlas`.")
    panda_proxy_file: str | None = Field(
        default=None, description="With `panda_auth: x509`: the x509 proxy file."
    )
    panda_ca_dir: str | None = Field(
        default=None, description="A directory of CA certificates for PanDA; null: the system's."
    )
    panda_source: str | None = Field(
        default=None,
        description="Where a PanDA task's artefacts are when its parameters do not say, "
        "`{task_id}`/`{task_name}` filled in, e.g. "
        "`https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid={task_id}`.",
    )
    panda_outputs_source: str | None = Field(
        default=None,
        description="Where a task's outputs are when `panda_source` is not set: a template over "
        "an output container (`{scope}`, `{container}`) or one output file (`{lfn}`, "
        "`{dataset}`); null: Rucio.",
    )
    # The web app
    web_host: str = Field(default="127.0.0.1", description="Address the web app listens on.")
    web_port: Port | None = Field(
        default=None,
        description="Port of the web app (permalink pages, catalog, the monitor's JSON); "
        "`idds-vis agent` serves it when set; 0: any free port.",
    )
    web_url: str | None = Field(
        default=None,
        description="The web app's public base URL behind a proxy (links, same-origin check).",
    )
    # Artefact source credentials: secrets are read from the FILES named here at each staging.
    http_token_files: dict[str, str] = Field(
        default_factory=dict,
        description="Host -> file holding a bearer token sent to that host only (https, or "
        "http to loopback).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="An S3-compatible server (MinIO, Ceph RGW); null: AWS."
    )
    s3_region: str | None = Field(default=None, description="The S3 region.")
    s3_access_key_file: str | None = Field(
        default=None,
        description="File holding the S3 access key (both key files, or neither: unsigned).",
    )
    s3_secret_key_file: str | None = Field(
        default=None, description="File holding the S3 secret key."
    )
    rucio_host: str | None = Field(
        default=None, description="Rucio server, e.g. `https://rucio-lb-prod.cern.ch`."
    )
    rucio_auth_host: str | None = Field(
        default=None, description="Rucio authentication server; null: `rucio_host`."
    )
    rucio_account: str | None = Field(default=None, description="Rucio account.")
    rucio_auth_type: Literal["userpass", "oidc", "x509_proxy"] = Field(
        default="userpass", description="How staging authenticates to Rucio."
    )
    rucio_vo: str | None = Field(default=None, description="Rucio VO (multi-VO servers).")
    rucio_username: str | None = Field(
        default=None, description="With `rucio_auth_type: userpass`: the user name."
    )
    rucio_password_file: str | None = Field(
        default=None, description="With `rucio_auth_type: userpass`: file holding the password."
    )
    rucio_token_file: str | None = Field(
        default=None, description="With `rucio_auth_type: oidc`: file holding a bearer token."
    )
    rucio_x509_proxy_file: str | None = Field(
        default=None, description="With `rucio_auth_type: x509_proxy`: the proxy file."
    )
    rucio_ca_cert: str | None = Field(
        default=None, description="A PEM file of CAs for Rucio; null: the client's CA bundle."
    )
    rucio_rse: str | None = Field(default=None, description="An RSE expression to download from.")
    # Trust in broker messages
    message_sources: dict[str, Any] | None = Field(
        default=None,
        description="Which sources a message may name: `schemes` (http, https, s3, rucio), "
        "`hosts` (`host`, `host:port`, `*.domain`, `*`), `s3_buckets`, `rucio_scopes`. "
        "Local paths and `file:` never come from a message. null: http(s) to any public host.",
    )
    allow_private_addresses: list[str] = Field(
        default_factory=list,
        description="Loopback, private or link-local CIDRs, addresses or host names that "
        "staging a message's source may still reach (none by default).",
    )
    message_auth: Literal["off", "hmac", "bearer"] = Field(
        default="off",
        description="Whether vis_request/vis_teardown messages must carry a verified sender "
        "credential.",
    )
    message_auth_keys_file: str | None = Field(
        default=None,
        description="With `message_auth`: one `name:secret` per line, read at each use.",
    )
    message_production_senders: list[str] = Field(
        default_factory=list,
        description="Verified senders acting for the production role (may end any instance, "
        "no user quota).",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Logs of `idds-vis agent` and `idds-vis web`: one JSON object per line, "
        "or text.",
    )
    # Self-service catalog, login and quotas
    oidc_issuer: str | None = Field(
        default=None,
        description="OIDC issuer for sign-in (https; plain http to loopback only); login is "
        "off unless set.",
    )
    dev_sign_in: bool = Field(
        default=False,
        description="FOR TRYING IDDS-VIS ON ONE MACHINE ONLY: sign in as any name, no issuer; "
        "loopback web_host and clients only, a banner on every page; not with `oidc_issuer`.",
    )
    oidc_client_id: str | None = Field(
        default=None, description="This app's OIDC client: browser sign-in, ID tokens' `aud`."
    )
    oidc_client_secret_file: str | None = Field(
        default=None, description="A confidential client's secret; null: PKCE only."
    )
    oidc_audience: list[str] = Field(
        default_factory=list, description="More accepted `aud` values of bearer tokens."
    )
    oidc_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"],
        description="Scopes asked for at sign-in.",
    )
    oidc_jwt_profile: Literal["default", "wlcg"] = Field(
        default="default", description="`wlcg`: groups from `wlcg.groups` instead of `groups`."
    )
    oidc_robot_clients: list[str] = Field(
        default_factory=list, description="OIDC clients that act for the production role."
    )
    production_groups: list[str] = Field(
        default_factory=list,
        description="Groups acting for the production role, e.g. `atlas/production`.",
    )
    session_key_file: str | None = Field(
        default=None,
        description="A Fernet key every replica shares for browser sessions; null: one per "
        "process.",
    )
    session_lifetime: Duration = Field(
        default=timedelta(hours=12), description="How long a browser session lasts."
    )
    auth_required_for_reads: bool | None = Field(
        default=None,
        description="Reads need a signed-in identity; null: on when `oidc_issuer` is set.",
    )
    public_task_json: bool = Field(
        default=False, description="The monitor's JSON stays anonymous (the BigPanDA snippet)."
    )
    tool_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Tool -> groups that may manage any task's UI."
    )
    tool_default_ttl: dict[str, Duration] = Field(
        default_factory=dict, description="Tool -> default lifetime; else `default_ttl`."
    )
    tool_max_ttl: dict[str, Duration] = Field(
        default_factory=dict, description="Tool -> maximum lifetime; else `max_ttl`."
    )
    quota_per_user: Count | None = Field(
        default=None, description="Live instances one user may have started; null: no limit."
    )
    quota_per_group: dict[str, Count] = Field(
        default_factory=dict, description="Group -> live instances its members may have."
    )
    quota_total: Count | None = Field(
        default=None, description="Live instances in all; null: no limit."
    )
    quota_user_ttl: Duration | None = Field(
        default=None, description="Lifetime left that one user may hold at once; null: no limit."
    )
    rate_limit: str = Field(
        default="120/minute",
        description="Requests per identity (per address when anonymous), like `120/minute`.",
    )
    allow_public_uis: bool = Field(
        default=False, description="A UI may be shared with everyone, signed in or not."
    )
    allow_anonymous_starts: bool = Field(
        default=False,
        description="Without `oidc_issuer`: permalink starts and relaunches from clients other "
        "than loopback are allowed.",
    )
    anonymous_max_ttl: Duration = Field(
        default=timedelta(hours=24), description="Longest lifetime of an anonymous start."
    )
    anonymous_quota_per_address: Count | None = Field(
        default=2,
        description="Live and waiting anonymous starts per client address; null: no limit.",
    )
    stream_limit_per_client: Int = Field(
        default=6,
        ge=1,
        description="Live streams (SSE) open at once per identity (per address when anonymous).",
    )
    stream_limit_total: Int = Field(
        default=500, ge=1, description="Live streams (SSE) open at once in all."
    )
    stream_lifetime: Duration = Field(
        default=timedelta(minutes=5),
        description="A live stream ends after this (the page reconnects).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxies (CIDRs or addresses) whose X-Forwarded-For/-Proto/-Host are "
        "honoured; none: the headers are ignored.",
    )
    # Several agents on one ledger
    lease_ttl: Duration = Field(
        default=timedelta(seconds=15),
        description="Several agents: leader and membership leases, renewed every third of it; "
        "a dead holder's work is taken over within `lease_ttl` and a third.",
    )
    stall_threshold: Duration = Field(
        default=timedelta(seconds=10),
        description="`/healthz` fails when the event loop's heartbeat is this late.",
    )
    ui_stub: bool = Field(
        default=False,
        description="FOR TESTS AND BENCHMARKS ONLY: local UIs are a tiny stand-in that answers "
        "the readiness probe instead of MLflow.",
    )
    ui_pool: dict[Annotated[str, AfterValidator(_served_tool)], PoolSize] = Field(
        default_factory=dict,
        description="Warm pool (local deployer): tool (`mlflow`) -> idle UI processes kept "
        f"started (MLflow imported, no data, ~200 MB each; at most {MAX_POOL}), each handed to "
        "one request and never reused; `{}`: none.",
    )
    ui_pool_max_age: Annotated[Duration, AfterValidator(_pool_age)] = Field(
        default=timedelta(hours=6),
        description="Warm pool: an idle member older than this is replaced (at least 1m).",
    )
    ui_pool_kubernetes: bool = Field(
        default=False,
        description="EXPERIMENTAL (issue 18): with `deployer: kubernetes`, keep `ui_pool` "
        "standby UI pods a request claims (docs/how-to/warm-pool.md, Kubernetes; needs the "
        "opt-in Role conf/standby/role.yaml).",
    )
    label: str | None = Field(
        default=None,
        description="Keeps the UIs of several agents on one machine apart; null: derived from "
        "`state_dir`.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Not a setting of the file: values code may attach."
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir / 'ledger.db'}"

    @property
    def ui_label(self) -> str:
        if self.label:
            return self.label
        return hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]

    def secrets(self) -> list[str]:
        """Every secret the settings hold or name (passwords, tokens, key files' contents), so
        that logs can leave them out whatever happens."""
        found: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str) or not value:
                continue
            name = f.name.lower()
            if _is_secret(name):
                found.append(value)
            elif name.endswith(("_file", "_proxy")) and any(
                word in name for word in ("token", "secret", "password", "key", "proxy")
            ):
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    path = Path(value).expanduser()
                    if path.is_file() and path.stat().st_size <= 64 * 1024:
                        lines = [line.strip() for line in path.read_text().splitlines()]
                        found.extend(lines)
                        if f.name == "message_auth_keys_file":
                            # "name:secret" lines: a log may quote the secret alone.
                            found.extend(line.partition(":")[2].strip() for line in lines)
        return [s for s in found if s]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (None values ignored), checked like the file's settings."""
        try:
            return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        except PydanticValidationError as exc:
            raise SettingsError(describe(exc, "setting")) from None


_NOT_ECHOED = {"database_url"}  # may hold a password; its own message names it, hidden


def _is_secret(name: str) -> bool:
    return name.endswith(("password", "_secret", "_token", "_key"))


def field_infos() -> dict[str, FieldInfo]:
    """Each setting's pydantic field: type, default, constraints, description."""
    infos: dict[str, FieldInfo] = getattr(Settings, "__pydantic_fields__")  # noqa: B009
    return infos


def setting_names() -> list[str]:
    """The names a settings file may use (``extra`` is for code only)."""
    return [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]


def describe(exc: PydanticValidationError, where: str) -> str:
    """A pydantic error as one line: ``where: setting workers: must be ... (got 'many')``."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        name = loc[0] if loc else "?"
        # pydantic marks a mapping's key with "[key]" after it: the key alone says it.
        path = name + "".join(f"[{p}]" for p in loc[1:] if p != "[key]")
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message.replace("Input should be", "must be")
        shown = error.get("input")
        if error["type"] == "unexpected_keyword_argument":
            parts.append(f"unknown setting {name}{did_you_mean(name)}")
            continue
        if (
            _is_secret(name)
            or name in _NOT_ECHOED
            or isinstance(shown, (dict, list))
            or shown is None
        ):
            parts.append(f"{path}: {message}")
        else:
            text = str(shown).replace("\n", " ")
            text = text if len(text) <= 60 else text[:57] + "..."
            got = (
                repr(text)
                if isinstance(shown, str)
                else text.lower()
                if isinstance(shown, bool)
                else text
            )
            parts.append(f"{path}: {message} (got {got})")
    return f"{where} " + "; ".join(parts) if where else "; ".join(parts)


def did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, setting_names(), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _takes_duration(name: str) -> bool:
    """A field typed ``timedelta`` (or ``timedelta | None``) without the Duration type reads
    "30m" too: fields added in plain dataclass style keep the YAML forms."""
    info = field_infos().get(name)
    if info is None:
        return False
    annotation = info.annotation
    return annotation is timedelta or timedelta in get_args(annotation)


def load_settings(path: Path | None) -> Settings:
    """The settings of a YAML file (defaults when ``path`` is None). Every problem (no file,
    not YAML, not a mapping, an unknown key, a wrong value) is a SettingsError of one line."""
    if path is None:
        return Settings()
    where = f"config {path}:"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SettingsError(f"{where} larger than {MAX_CONFIG_BYTES // 1024} KiB")
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{where} cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{where} not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SettingsError(f"{where} not valid YAML{at}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a mapping of settings (name: value)")
    try:
        return _load_mapping(raw, where)
    except SettingsError as exc:  # the errors follow the file's log format (agent, web)
        wanted = raw.get("log_format", raw.get("log-format"))
        exc.log_format = wanted if wanted in ("json", "text") else None
        raise


def _load_mapping(raw: dict[Any, Any], where: str) -> Settings:
    known = set(setting_names())
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            shown = " ".join(str(key).split())
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise SettingsError(f"{where} unknown setting {shown}{did_you_mean(name)}")
        if _takes_duration(name) and value is not None:
            try:
                value = _duration(value)
            except ValueError as exc:
                raise SettingsError(f"{where} {name}: {exc}") from None
        values[name] = value
    try:
        settings = Settings(**values)
    except PydanticValidationError as exc:
        raise SettingsError(describe(exc, where)) from None
    check_ui_egress(settings, where)
    return settings


def check_ui_egress(settings: Settings, where: str) -> None:
    try:
        parse_egress(settings.ui_egress)
    except ValueError as exc:
        raise SettingsError(f"{where} setting {exc}") from None
