"""An allowlist in front of MLflow's ASGI app: only what the UI needs to show data gets through.

MLflow 3.17 mounts endpoints that write or reach out whatever the store is (the assistant writes
``$HOME/.mlflow/assistant/config.json`` and installs "skills" where the caller says, the gateway
proxies to the internet, jobs run code, uploads write files). The read-only SQLite store stops
only writes that go through the store. So the gate lets through exactly the requests the UI
makes to show experiments, runs, metrics, artefacts, models, traces and datasets (read from
MLflow 3.17.2's route tables and its js bundle's API calls), under the instance's prefix; every
other request is answered 403 "this UI is read-only" before MLflow sees it.

Matching is on the decoded path MLflow routes on (``scope["path"]``), exact segment by segment,
so ``//``, ``.``/``..`` segments, encoded slashes and trailing slashes never match an allowed
route. Pure ASGI and no MLflow import: unit-tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READ_ONLY = "this UI is read-only"
BAD_PATH = "this UI is read-only: an artefact path must stay inside the artefacts"

ONE = "{}"  # one path segment (an id)
REST = "{path}"  # the rest of the path, one or more segments (static files)

_V2 = "ajax-api/2.0/mlflow/"
_V3 = "ajax-api/3.0/mlflow/"

# GET (and HEAD): pages, static files, artefact downloads and the store's reads. Not here,
# although MLflow answers them to a GET: the assistant, gateway (and gateway-proxy), MCP and job
# endpoints, webhooks (they name outside URLs), ui-telemetry (fetches a config from the internet
# unless telemetry is off), workspaces, prompt optimisation, the REST API under /api (the UI uses
# /ajax-api only) and the proxied-artefact routes (no artefact proxy is configured).
READ_GETS = (
    "",
    "health",
    "version",
    f"static-files/{REST}",
    "get-artifact",
    "model-versions/get-artifact",
    _V2 + "experiments/get",
    _V2 + "experiments/get-by-name",
    _V2 + "experiments/search",
    _V2 + "runs/get",
    _V2 + "metrics/get-history",
    _V2 + "metrics/get-history-bulk",
    _V2 + "metrics/get-history-bulk-interval",
    _V2 + "artifacts/list",
    _V2 + "registered-models/get",
    _V2 + "registered-models/search",
    _V2 + "registered-models/get-latest-versions",
    _V2 + "registered-models/alias",
    _V2 + "model-versions/get",
    _V2 + "model-versions/search",
    _V2 + "model-versions/get-download-uri",
    _V2 + f"logged-models/{ONE}",
    _V2 + f"logged-models/{ONE}/artifacts/files",
    _V2 + f"logged-models/{ONE}/artifacts/directories",
    _V2 + "get-trace-artifact",
    _V2 + "traces",
    _V2 + f"traces/{ONE}/info",
    _V3 + "get-trace-artifact",
    _V3 + "server-info",
    _V3 + "traces/get",
    _V3 + "traces/batchGet",
    _V3 + f"traces/{ONE}",
    _V3 + f"traces/{ONE}/assessments/{ONE}",
    _V3 + "datasets/search",
    _V3 + f"datasets/{ONE}",
    _V3 + f"datasets/{ONE}/records",
    _V3 + f"datasets/{ONE}/experiment-ids",
    _V3 + "scorers/list",
    _V3 + "scorers/get",
    _V3 + "scorers/versions",
    _V3 + "label-schemas/list",
    _V3 + "label-schemas/get",
    _V3 + "label-schemas/get-by-name",
    _V3 + "review-queues/list",
    _V3 + "review-queues/get",
    _V3 + "review-queues/get-by-name",
    _V3 + "review-queues/items/list",
    _V3 + f"issues/{ONE}",
)

# POST requests that only read: searches and batch gets whose filters do not fit a query string.
# GraphQL too: MLflow's schema has no mutation that writes (only searches and an echo).
READ_POSTS = (
    "graphql",
    _V2 + "experiments/search",
    _V2 + "experiments/search-datasets",
    _V2 + "runs/search",
    _V2 + "logged-models/search",
    _V2 + "registered-models/get-latest-versions",
    _V3 + "traces/search",
    _V3 + "traces/batchGetInfos",
    _V3 + "traces/metrics",
    _V3 + "traces/calculate-filter-correlation",
    _V3 + "datasets/search",
    _V3 + "issues/search",
)

# Query parameters naming a file under a run's, model's or trace's artefacts. MLflow checks them
# too (validate_path_is_safe); refusing here keeps a traversal away from MLflow's code entirely.
_PATH_PARAMS = frozenset({"path", "artifact_path", "artifact_file_path"})
_SEGMENT = re.compile(r"[^/\x00\\]+")


@dataclass(frozen=True)
class Route:
    segments: tuple[str, ...]
    methods: frozenset[str]

    def matches(self, parts: list[str]) -> bool:
        if self.segments and self.segments[-1] == REST:
            head = self.segments[:-1]
            if len(parts) <= len(head):
                return False
        elif len(parts) != len(self.segments):
            return False
        else:
            head = self.segments
        return all(want in (ONE, part) for want, part in zip(head, parts, strict=False))


def build_routes(gets: Iterable[str] = READ_GETS, posts: Iterable[str] = READ_POSTS) -> list[Route]:
    methods: dict[str, set[str]] = {}
    for path in gets:
        methods.setdefault(path, set()).update({"GET", "HEAD"})
    for path in posts:
        methods.setdefault(path, set()).add("POST")
    return [
        Route(tuple(path.split("/")) if path else (), frozenset(allowed))
        for path, allowed in methods.items()
    ]


def check_prefix(prefix: str) -> None:
    """The gate compares paths with the prefix segment by segment: it must be one, clean."""
    parts = prefix.split("/")[1:]
    if (
        not prefix.startswith("/")
        or not parts
        or not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts)
    ):
        raise ValueError(f"the UI prefix must look like /vis/<name>, not {prefix!r}")


@dataclass(frozen=True)
class Verdict:
    status: int  # 0: let through
    message: str = ""


PASS = Verdict(0)


class ReadOnlyGate:
    """Wraps an ASGI app; lets through only allowlisted (method, path) pairs under ``prefix``."""

    def __init__(self, app: ASGIApp, prefix: str, routes: list[Route] | None = None) -> None:
        check_prefix(prefix)
        self.app = app
        self.prefix = prefix
        self.routes = routes if routes is not None else build_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a WebSocket: nothing the UI needs
            await send({"type": "websocket.close", "code": 1008})
            return
        verdict = self.decide(
            str(scope.get("method", "")),
            str(scope.get("path", "")),
            bytes(scope.get("query_string", b"")),
            _header(scope, b"access-control-request-method"),
        )
        if verdict is PASS:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, verdict)

    def decide(
        self, method: str, path: str, query: bytes = b"", preflight_method: str | None = None
    ) -> Verdict:
        allowed = self._methods(path)
        if method == "OPTIONS":
            # A CORS preflight goes to MLflow (which answers it for its allowed origins) only
            # for a method the route allows; any other OPTIONS is refused.
            if preflight_method is None or preflight_method.upper() not in allowed:
                return Verdict(403, READ_ONLY)
            return PASS
        if method not in allowed:
            return Verdict(403, READ_ONLY)
        if not _paths_stay_inside(query):
            return Verdict(400, BAD_PATH)
        return PASS

    def _methods(self, path: str) -> frozenset[str]:
        """The methods allowed on ``path``: every route it matches counts, so a literal route
        (``logged-models/search``, POST) is not shadowed by one with an id there (GET)."""
        if path == self.prefix:  # MLflow redirects it to the page ("<prefix>/")
            parts: list[str] = []
        elif path.startswith(self.prefix + "/"):
            rest = path[len(self.prefix) + 1 :]
            parts = rest.split("/") if rest else []
            if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
                return frozenset()
        else:
            return frozenset()
        return frozenset().union(*(r.methods for r in self.routes if r.matches(parts)))


def _paths_stay_inside(query: bytes) -> bool:
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    for name, value in pairs:
        if name not in _PATH_PARAMS:
            continue
        # Decoded again until stable: a doubly encoded "%252e%252e" must not hide a "..".
        seen = value
        for _ in range(4):
            decoded = unquote(seen)
            if decoded == seen:
                break
            seen = decoded
        if seen.startswith("/") or "\\" in seen or "\x00" in seen:
            return False
        if any(part == ".." for part in seen.split("/")):
            return False
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, verdict: Verdict) -> None:
    body = json.dumps({"error_code": "PERMISSION_DENIED", "message": verdict.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": verdict.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
