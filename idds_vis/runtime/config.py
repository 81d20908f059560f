"""Settings, read from a YAML file (``--config`` / ``IDDS_VIS_CONFIG``) and the command line."""

from __future__ import annotations

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
    kubeconfig: str | None = None  # None: the in-cluster service account
    ui_image: str = "idds-vis-ui:0.1.0"
    exposure: str = "ingress"  # or "route" (OpenShift)
    ingress_class: str | None = "nginx"
    # STOMP intake (off unless stomp_hosts is set): "host:port" entries, topics or
    # /queue/Consumer.idds-vis.VirtualTopic.X queues, and where malformed messages go.
    stomp_hosts: list[str] = field(default_factory=list)
    stomp_subscriptions: list[str] = field(default_factory=list)
    stomp_user: str | None = None
    stomp_password: str | None = None
    stomp_dead_letter: str = "/queue/idds-vis.DLQ"
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

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_DURATIONS = {"default_ttl", "max_ttl", "start_timeout", "reconcile_interval"}


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
        elif name == "state_dir":
            values[name] = Path(value).expanduser()
        else:
            values[name] = value
    if extra:
        unknown = ", ".join(sorted(extra))
        raise InvalidRequest(f"config {path} has unknown settings: {unknown}")
    return Settings(**values)
