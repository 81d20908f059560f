"""Requests, instances and what the adapters hand back to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import DEFAULT_TTL
from idds_vis.domain.naming import instance_name, url_prefix
from idds_vis.domain.phases import Phase

DEFAULT_TOOL = "mlflow"
# The tools an idds-vis can start: the one list every way in (the CLI, the web API, messages,
# the permalink) checks against, so an unknown tool is refused before anything is recorded.
TOOLS: frozenset[str] = frozenset({DEFAULT_TOOL})


def check_tool(tool: str) -> str:
    if tool not in TOOLS:
        known = ", ".join(sorted(TOOLS))
        raise InvalidRequest(f"unknown visualization tool {tool!r}: idds-vis serves {known}")
    return tool


@dataclass(frozen=True)
class InstanceKey:
    """The idempotency key: one live instance per (task id, tool)."""

    task_id: str
    tool: str = DEFAULT_TOOL

    @property
    def name(self) -> str:
        return instance_name(self.task_id, self.tool)


@dataclass(frozen=True)
class VisRequest:
    task_id: str
    source: str | None = None
    tool: str = DEFAULT_TOOL
    ttl: timedelta = DEFAULT_TTL
    origin: str = "cli"
    requested_by: str | None = None
    # The PanDA task name, when known: the permalink is keyed by it (the id comes later).
    task_name: str | None = None

    def __post_init__(self) -> None:
        check_tool(self.tool)  # a request for a tool idds-vis cannot start is never recorded

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.task_id, self.tool)


@dataclass(frozen=True)
class PhaseEvent:
    task_id: str
    tool: str
    phase: Phase
    at: datetime
    reason: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class Instance:
    """One row of the ledger: the state of one (task, tool) visualization."""

    task_id: str
    tool: str
    name: str
    phase: Phase
    source: str | None
    ttl: timedelta
    created_at: datetime
    updated_at: datetime
    attempt: int = 1
    origin: str = "cli"
    requested_by: str | None = None
    url: str | None = None
    expires_at: datetime | None = None
    reason: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    task_name: str | None = None
    # The random segment of the UI's path (naming.new_path_token); None on a record an older
    # version created, whose UI keeps its name-derived path until it is relaunched.
    path_token: str | None = None
    visibility: str | None = None  # domain/access.py; None: private

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.task_id, self.tool)

    @property
    def prefix(self) -> str:
        return url_prefix(self.path_token or self.name)

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "tool": self.tool,
            "name": self.name,
            "phase": self.phase.value,
            "source": self.source,
            "ttl_seconds": int(self.ttl.total_seconds()),
            "url": self.url,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "reason": self.reason,
            "attempt": self.attempt,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class StagedArtefacts:
    """What staging produced: where the data is and what a reachable UI must list."""

    root: str
    layout: str  # "sqlite" (an mlflow.db) or "file-store" (an mlruns tree)
    store_path: str  # the mlflow.db file or the mlruns directory, inside root
    experiments: tuple[str, ...]  # experiment names a working UI lists
    files: int
    bytes: int


@dataclass(frozen=True)
class Deployment:
    """Where a deployed UI answers; ``handle`` is what the deployer needs to find it again."""

    url: str
    health_url: str
    handle: dict[str, Any] = field(default_factory=dict)
    host_header: str | None = None
    # Where the readiness probe reaches the UI when that is not its public URL (the local
    # deployer's UIs behind the web app's proxy), and the headers it must send there.
    probe_url: str | None = None
    probe_headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RunningUI:
    """A UI the deployer found running, for the reconciler to compare with the ledger."""

    name: str
    handle: dict[str, Any]
    healthy: bool = True
