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

The landing (issue 19): MLflow 3.17 opens on its GenAI home (demo, prompts, gateway, an
assistant, a telemetry notice). The gate adds one script of its own to MLflow's page
(``<prefix>/idds-vis/landing.js``, before MLflow's deferred bundle runs) which sets the UI's
own local-storage switches (read from MLflow 3.17.2's bundle: ``mlflow.workflowType_v1``,
``mlflow.telemetry.info.alert.dismissed_v1``, ``mlflow.assistant.*``,
``mlflow.detectIssues.guidanceShown_v1``) and, when the page is opened at its root, replaces
the address with the task's experiment's runs in the model-training mode
(``#/experiments/<id>/runs?workflowType=machine_learning``). The experiment is found by the
gate asking the wrapped app the same search the UI makes (the task's only experiment besides
an empty Default; the experiments list when there are several).

The web app's own cookies (its session, a share link's token) are taken out of every request
before MLflow's app sees it (``without_own_cookies``): behind an ingress they arrive with the
visitor's request (issue 17).
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
LANDING_SCRIPT = "idds-vis/landing.js"  # answered by the gate itself, under the prefix
ML_MODE = "workflowType=machine_learning"
DEFAULT_EXPERIMENT = "0"
# MLflow 3.17.2's local-storage switches (its useLocalStorage: JSON under "<key>_v<version>"):
# the model-training mode, the telemetry notice dismissed and telemetry off, the assistant
# pane closed and never opened by itself, the "Detect Issues" tip already seen, "Getting
# started" folded.
UI_DEFAULTS: dict[str, object] = {
    "mlflow.telemetry.info.alert.dismissed_v1": True,
    "mlflow.settings.telemetry.enabled_v1": False,
    "mlflow.assistant.panelOpen_v1": False,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.detectIssues.guidanceShown_v1": True,
    "mlflow.home.getting-started.collapsed_v1": True,
}
WORKFLOW_KEY = "mlflow.workflowType_v1"
# The UI asks the gateway proxy for its endpoints on every page; refused, it shows a
# "PERMISSION_DENIED" toast. Answered here as MLflow answers it when no gateway is configured
# (handlers.gateway_proxy_handler: "pretend an empty gateway service is running"); every other
# gateway-proxy request is still refused, and none reaches MLflow.
GATEWAY_ENDPOINTS = "ajax-api/2.0/mlflow/gateway-proxy"
NO_ENDPOINTS = b'{"endpoints": []}'

# The assistant's button shows on a loopback address whatever the server says (MLflow decides
# on window.location.hostname): hidden by the mark MLflow puts on the assistant's parts.
# Nothing of it works here anyway (the gate refuses the assistant's endpoints).
HIDDEN_CSS = (
    '[data-assistant-ui="true"],[data-component-id^="mlflow.assistant"]{display:none!important}'
)

BAD_PATH = "this UI is read-only: an artefact path must stay inside the artefacts"
# The web app's cookies (api/auth/sessions.py's and api/auth/share_links.py's COOKIE; the UI
# layer may not import the web app's, a unit test compares): never passed on to MLflow.
OWN_COOKIES = frozenset({b"idds_vis_session", b"idds_vis_share"})

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
        scope = without_own_cookies(scope)
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        if method in ("GET", "HEAD") and path == f"{self.prefix}/{LANDING_SCRIPT}":
            await self._landing_script(scope, send)
            return
        if method in ("GET", "HEAD") and path == self.prefix + "/":
            await self._page(scope, receive, send)
            return
        if method == "GET" and path == f"{self.prefix}/{GATEWAY_ENDPOINTS}" \
                and _endpoints_listing(bytes(scope.get("query_string", b""))):  # fmt: skip
            await _answer(send, 200, NO_ENDPOINTS, b"application/json")
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

    async def _page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """MLflow's page, with the landing script before MLflow's own (deferred) bundle."""
        inner = dict(scope)
        # Uncompressed, so the page can be read and changed here.
        inner["headers"] = [(k, v) for k, v in scope.get("headers", [])
                            if bytes(k).lower() != b"accept-encoding"]  # fmt: skip
        start, body = await _collect(self.app, inner, receive)
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        html = any(k.lower() == b"content-type" and v.startswith(b"text/html")
                   for k, v in headers)  # fmt: skip
        if start.get("status") == 200 and html and b"</head>" in body:
            tag = f'<script src="{LANDING_SCRIPT}"></script>'.encode()
            body = body.replace(b"</head>", tag + b"</head>", 1)
            dropped = {b"content-length", b"etag", b"last-modified", b"content-encoding"}
            headers = [(k, v) for k, v in headers if k.lower() not in dropped]
            headers += [(b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store")]  # fmt: skip
        await send({**start, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})  # fmt: skip

    async def _landing_script(self, scope: Scope, send: Send) -> None:
        target = await self.landing(scope)
        body = landing_script(target).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/javascript; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})  # fmt: skip

    async def landing(self, scope: Scope) -> str:
        """Where the page opens: the task's experiment's runs, in the model-training mode."""
        inner = dict(scope)
        path = f"{self.prefix}/{_V2}experiments/search"
        inner.update(method="GET", path=path, raw_path=path.encode(),
                     query_string=b"max_results=50&view_type=ACTIVE_ONLY")  # fmt: skip
        inner["headers"] = [(k, v) for k, v in scope.get("headers", [])
                            if bytes(k).lower() not in (b"accept-encoding", b"cookie")]  # fmt: skip

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        try:
            start, body = await _collect(self.app, inner, nothing)
            found = json.loads(body) if start.get("status") == 200 else {}
        except ValueError:
            found = {}
        return landing_target(found.get("experiments") if isinstance(found, dict) else None)

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


def landing_target(experiments: object) -> str:
    """The hash route to open: one experiment's runs (an empty Default besides it does not
    count), else the experiments list; always in the model-training mode."""
    ids = []
    if isinstance(experiments, list):
        for exp in experiments:
            if isinstance(exp, dict) and isinstance(exp.get("experiment_id"), str):
                ids.append(exp["experiment_id"])
    named = [i for i in ids if i != DEFAULT_EXPERIMENT] or ids
    if len(named) == 1 and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", named[0]):
        return f"/experiments/{named[0]}/runs?{ML_MODE}"
    return f"/experiments?{ML_MODE}"


def landing_script(target: str) -> str:
    """The script the gate adds to MLflow's page (no user data in it: ids are checked)."""
    return f"""// idds-vis: open on the task's runs, in the model-training mode (issue 19).
"use strict";
(() => {{
  try {{
    const defaults = {json.dumps(UI_DEFAULTS)};
    for (const [key, value] of Object.entries(defaults)) {{
      localStorage.setItem(key, JSON.stringify(value));
    }}
    if (localStorage.getItem({json.dumps(WORKFLOW_KEY)}) === null) {{
      localStorage.setItem({json.dumps(WORKFLOW_KEY)}, JSON.stringify("machine_learning"));
    }}
  }} catch (e) {{ /* no storage (a private window): MLflow's own defaults */ }}
  const style = document.createElement("style");
  style.textContent = {json.dumps(HIDDEN_CSS)};
  document.head.appendChild(style);
  if (["", "#", "#/"].includes(location.hash)) {{
    history.replaceState(null, "", "#" + {json.dumps(target)});
  }}
}})();
"""


def _endpoints_listing(query: bytes) -> bool:
    """Exactly the UI's listing of gateway endpoints, nothing else of the gateway proxy."""
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return False
    return [name for name, _ in pairs] == ["gateway_path"] and pairs[0][1].strip("/") in (
        "api/2.0/endpoints",
    )


async def _answer(send: Send, status: int, body: bytes, kind: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _collect(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run ``app`` on one request; its response start message and whole body."""
    start: Message = {"type": "http.response.start", "status": 500, "headers": []}
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, keep)
    return start, b"".join(chunks)


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


def without_own_cookies(scope: Scope) -> Scope:
    """``scope`` without idds-vis's own cookies (``OWN_COOKIES``) in its ``Cookie`` headers.

    On Kubernetes the ingress passes the visitor's request, cookies and all, to the UI's pod:
    the web app's session cookie and a share link's token (set for the UI's path) would reach
    MLflow, its logs and anything it runs. The visitor's other cookies go on as they came; a
    header left empty goes. The scope is copied, never changed in place."""
    headers = scope.get("headers", [])
    if not any(bytes(k).lower() == b"cookie" for k, _ in headers):
        return scope
    kept: list[tuple[bytes, bytes]] = []
    for key, value in headers:
        if bytes(key).lower() != b"cookie":
            kept.append((key, value))
            continue
        pairs = [p for p in bytes(value).split(b";") if p.strip()]
        left = [p.strip() for p in pairs if p.split(b"=", 1)[0].strip() not in OWN_COOKIES]
        if left:
            kept.append((key, b"; ".join(left)))
    return {**scope, "headers": kept}


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
