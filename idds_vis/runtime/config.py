"""Settings, read from a YAML file (``--config`` / ``IDDS_VIS_CONFIG``) and the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import DEFAULT_TTL, parse_duration

DEFAULT_STATE_DIR = Path.home() / ".idds-vis"


@dataclass
class Settings:
    state_dir: Path = DEFAULT_STATE_DIR
    # SQLAlchemy URL; SQLite in the state dir unless set (postgresql+asyncpg://... for PostgreSQL).
    database_url: str | None = None
    deployer: str = "local"
    bind_host: str = "127.0.0.1"
    public_host: str = "127.0.0.1"
    workers: int = 4
    default_ttl: timedelta = DEFAULT_TTL
    max_ttl: timedelta | None = timedelta(days=7)
    start_timeout: timedelta = timedelta(minutes=3)
    max_bytes: int = 2 * 1024**3
    max_files: int = 20_000
    reconcile_interval: timedelta = timedelta(minutes=1)
    # deployer: kubernetes
    namespace: str = "default"
    # Where the UIs' objects go (issue 17: a namespace of their own); None: namespace.
    ui_namespace: str | None = None
    kubeconfig: str | None = None  # None: the in-cluster service account
    ui_image: str = "idds-vis-ui:0.1.0"
    exposure: str = "ingress"  # or "route" (OpenShift)
    ingress_class: str | None = "nginx"
    # Where UI pods may connect besides cluster DNS (their serve-ui stages the source itself):
    # a list of {cidr, except, ports}, e.g. [{cidr: 192.0.2.0/24, ports: [443]}]; ports as 443
    # or "53/UDP", none for every port. Default: nothing, so no artefact server is reachable
    # until its addresses are listed here.
    ui_egress: list[dict[str, Any]] = field(default_factory=list)
    # STOMP intake (off unless stomp_hosts is set): "host:port" entries, topics or
    # /queue/Consumer.idds-vis.VirtualTopic.X queues, and where malformed messages go.
    stomp_hosts: list[str] = field(default_factory=list)
    stomp_subscriptions: list[str] = field(default_factory=list)
    stomp_user: str | None = None
    stomp_password: str | None = None
    stomp_dead_letter: str = "/queue/idds-vis.DLQ"
    # What the subscriptions do not ignore is copied here and read back, so the stream itself
    # is acked cumulatively (README "STOMP intake"); one queue per deployment. None: read the
    # subscriptions directly, one ack per message.
    stomp_relay_queue: str | None = "/queue/idds-vis.intake"
    stomp_prefetch: int = 1000  # unacked messages the broker hands over per subscription
    stomp_relay_prefetch: int = 100  # the same for the relay queue
    # iDDS (work_processing messages): the REST server whose transforms and workflows are read.
    idds_host: str | None = None  # e.g. https://idds.example.org:443/idds
    idds_auth_type: str = "x509_proxy"  # or "oidc"
    idds_x509_proxy: str | None = None
    idds_oidc_token_file: str | None = None
    idds_vo: str | None = None
    # PanDA (task_status messages, the permalink): the server whose task parameters are read.
    panda_url: str | None = None  # e.g. https://pandaserver.cern.ch:25443
    panda_auth: str = "oidc"  # or "x509"
    panda_token_file: str | None = None  # an ID token, read at every call
    panda_vo: str | None = None  # e.g. atlas
    panda_proxy_file: str | None = None
    panda_ca_dir: str | None = None
    # PanDA task_status messages: where a task's artefacts are when its parameters do not say,
    # e.g. "https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid={task_id}".
    panda_source: str | None = None
    # Where a task's outputs are, when panda_source is not set: a template over an output
    # container ({scope}, {container}) or one output file ({lfn}, {dataset}); unset: Rucio.
    panda_outputs_source: str | None = None
    # The web app (permalink pages, the monitor's JSON): `idds-vis agent` serves it when
    # web_port is set; web_url is its public base URL when a proxy is in front.
    web_host: str = "127.0.0.1"
    web_port: int | None = None
    web_url: str | None = None
    # --- Artefact source credentials (README "Artefact sources and credentials"). Secrets are
    # read from the FILES named here at each staging (so rotation needs no restart); their
    # contents never enter settings, logs or failure reasons.
    http_token_files: dict[str, str] = field(default_factory=dict)  # host -> bearer token file
    s3_endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph RGW); None: AWS
    s3_region: str | None = None
    s3_access_key_file: str | None = None  # both key files, or neither (anonymous reads)
    s3_secret_key_file: str | None = None
    rucio_host: str | None = None  # e.g. https://rucio-lb-prod.cern.ch
    rucio_auth_host: str | None = None  # default: rucio_host
    rucio_account: str | None = None
    rucio_auth_type: str = "userpass"  # or "oidc" (rucio_token_file), "x509_proxy"
    rucio_vo: str | None = None
    rucio_username: str | None = None
    rucio_password_file: str | None = None
    rucio_token_file: str | None = None
    rucio_x509_proxy_file: str | None = None
    rucio_ca_cert: str | None = None  # a PEM file; default: the client's CA bundle
    rucio_rse: str | None = None  # an RSE expression to download from
    # --- end of artefact source credentials
    # --- Trust in broker messages (README "Artefact sources from messages"). Sources a message
    # names (vis_request, an iDDS VisualizationWork) must pass message_sources: a mapping of
    # schemes (http, https, s3, rucio), hosts ("host" or "host:port", "*.domain", "*": any),
    # s3_buckets and rucio_scopes (none listed: no S3 / Rucio source from messages). Local paths
    # and file: are never taken from a message. Staging them reaches no loopback, private or
    # link-local address unless allow_private_addresses lists it (CIDRs, addresses, host names).
    message_sources: dict[str, Any] | None = None  # None: http(s) to any public host
    allow_private_addresses: list[str] = field(default_factory=list)
    # vis_request/vis_teardown must carry a verified sender credential: "off", "hmac" or
    # "bearer", with one "name:secret" per line in message_auth_keys_file (read at each use).
    message_auth: str = "off"
    message_auth_keys_file: str | None = None
    # Verified senders acting for the production role (may end any instance, no user quota).
    message_production_senders: list[str] = field(default_factory=list)
    # --- end of trust in broker messages
    # Logs of the agent and the web app: "json" (one object per line) or "text".
    log_format: str = "json"
    # --- Self-service catalog, login and quotas (README "Self-service catalog, login and
    # quotas"). Login is off unless oidc_issuer is set; then changes need a signed-in identity
    # (a bearer token, or the browser's session after the authorization-code flow with PKCE).
    oidc_issuer: str | None = None  # https (plain http to loopback only)
    oidc_client_id: str | None = None  # this app's client: browser sign-in, ID tokens' aud
    oidc_client_secret_file: str | None = None  # a confidential client's secret; none: PKCE only
    oidc_audience: list[str] = field(default_factory=list)  # more accepted aud of bearer tokens
    oidc_scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email"])
    oidc_jwt_profile: str = "default"  # "wlcg": groups from wlcg.groups instead of groups
    oidc_robot_clients: list[str] = field(default_factory=list)  # act for the production role
    production_groups: list[str] = field(default_factory=list)  # e.g. ["atlas/production"]
    session_key_file: str | None = None  # a Fernet key every replica shares; none: per process
    session_lifetime: timedelta = timedelta(hours=12)
    auth_required_for_reads: bool | None = None  # None: on when oidc_issuer is set
    public_task_json: bool = False  # the monitor's JSON stays anonymous (the BigPanDA snippet)
    tool_groups: dict[str, list[str]] = field(default_factory=dict)  # may manage any task's UI
    tool_default_ttl: dict[str, timedelta] = field(default_factory=dict)  # else default_ttl
    tool_max_ttl: dict[str, timedelta] = field(default_factory=dict)  # else max_ttl
    quota_per_user: int | None = None  # live instances one user may have started
    quota_per_group: dict[str, int] = field(default_factory=dict)  # group -> live instances
    quota_total: int | None = None  # live instances in all
    quota_user_ttl: timedelta | None = None  # lifetime left that one user may hold at once
    rate_limit: str = "120/minute"  # requests per identity (per address when anonymous)
    # Issue 17: a UI may be shared with everyone, signed in or not, only when this is on.
    allow_public_uis: bool = False
    # Without oidc_issuer, permalink starts and relaunches from any client but loopback are
    # refused unless allow_anonymous_starts; every anonymous start is held to quota_total,
    # anonymous_quota_per_address (live + waiting per client address) and anonymous_max_ttl.
    allow_anonymous_starts: bool = False
    anonymous_max_ttl: timedelta = timedelta(hours=24)
    anonymous_quota_per_address: int | None = 2
    # Live streams (SSE): open at once per identity (per address when anonymous) and in all;
    # each ends after stream_lifetime (the page reconnects).
    stream_limit_per_client: int = 6
    stream_limit_total: int = 500
    stream_lifetime: timedelta = timedelta(minutes=5)
    # Proxies in front of the web app (CIDRs or addresses): X-Forwarded-For/-Proto/-Host are
    # honoured only from them; none: the headers are ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    # --- end of self-service
    # --- Several agents on one ledger (README "Running several agents"). The reaper and the
    # reconciler run on the replica holding the leader lease (in the ledger with the local
    # deployer, a Kubernetes Lease with deployer: kubernetes); each replica holds a membership
    # lease while its workers run. Leases are renewed every lease_ttl/3; after a holder dies
    # another replica takes over within lease_ttl + lease_ttl/3.
    lease_ttl: timedelta = timedelta(seconds=15)
    # /healthz fails when the event loop's heartbeat (every second) is this late.
    stall_threshold: timedelta = timedelta(seconds=10)
    # FOR TESTS AND BENCHMARKS ONLY: the local deployer starts a tiny stand-in that answers the
    # readiness probe (idds_vis/ui/stub.py) instead of the MLflow UI.
    ui_stub: bool = False
    # --- end of several agents
    # Keeps the UIs of several agents on one machine apart; derived from the state dir if unset.
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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
            if name.endswith(("password", "_secret", "_token", "_key")):
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
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_DURATIONS = {"default_ttl", "max_ttl", "start_timeout", "reconcile_interval",
              "session_lifetime", "quota_user_ttl"}  # fmt: skip
_DURATION_MAPS = {"tool_default_ttl", "tool_max_ttl"}  # tool -> duration

_DURATIONS |= {"lease_ttl", "stall_threshold"}  # several agents
_DURATIONS |= {"anonymous_max_ttl", "stream_lifetime"}  # access without an issuer, streams


def load_settings(path: Path | None) -> Settings:
    if path is None:
        return Settings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest(f"config {path} must be a mapping of settings")
    known = {f.name for f in dataclasses.fields(Settings)} - {"extra"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            extra[key] = value
        elif name in _DURATIONS:
            values[name] = None if value is None else parse_duration(value)
        elif name in _DURATION_MAPS:
            values[name] = {k: parse_duration(v) for k, v in (value or {}).items()}
        elif name == "state_dir":
            values[name] = Path(value).expanduser()
        else:
            values[name] = value
    if extra:
        unknown = ", ".join(sorted(extra))
        raise InvalidRequest(f"config {path} has unknown settings: {unknown}")
    return Settings(**values)
