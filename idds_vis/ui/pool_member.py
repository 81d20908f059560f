"""A warm pool member (issue 18): an MLflow UI process started before any request, with
MLflow and its app imported and listening on loopback, serving nothing until the agent hands
it one instance's staged store (``ui/handover.py``); then it is that instance's UI until it
is stopped, never another's.

``python -m idds_vis.ui.pool_member --port <p> --instances <dir> --workdir <member dir>
[--host …] [--allowed-host …] [--cors-origin …]``, started by ``deploy/pool.py`` with the
allowlisted environment plus its hand-over secret (removed from this process's environment at
once, kept in memory) and, behind the web app, the proxy secret.

Before the hand-over every request but the authenticated control paths gets 503. MLflow's app
is built at start with a fixed prefix (``MEMBER_PREFIX``); after the hand-over the stack is
the one ``ui/gated_app.py`` builds — proxy guard, read-only gate on the instance's prefix —
with requests under that prefix passed to MLflow under the member's one (``PrefixSwap``).
The read-only store, allowed hosts and CORS are as in ``ui/uvicorn_server.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from idds_vis.domain.naming import PROXY_HEADER
from idds_vis.ui.handover import (
    HANDOVER_PATH,
    MAX_BODY,
    MEMBER_PREFIX,
    SECRET_ENV,
    SECRET_HEADER,
    STATE_PATH,
    Handover,
    Refused,
)
from idds_vis.ui.proxy_guard import SECRET_ENV as PROXY_SECRET_ENV
from idds_vis.ui.uvicorn_server import (
    ARTIFACT_ROOT_ENV_VAR,
    BACKEND_STORE_URI_ENV_VAR,
    REGISTRY_STORE_URI_ENV_VAR,
    Phases,
    add_listen_arguments,
    cache_schema_head,
    leave_out_unused_modules,
    mlflow_switches,
    run_dirs,
    serve_asgi,
)

_NO_TASK = b"this UI has not been given a task yet\n"
PRELOADED = (
    "mlflow.store.db.utils",
    "mlflow.store.fs2db",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    # Imported when the store is first opened (its tracer set-up): ~0.8 MB, 0.06 s.
    "mlflow.tracing.processor.base_mlflow",
    # The store's preparation (a few modules of idds_vis.staging, whose package no longer
    # loads the stagers): ~1 MB, 0.03-0.2 s of a hand-over (was a thread's late start).
    "idds_vis.staging.info",
    "idds_vis.ui.store",
)


class PrefixSwap:
    """Requests under ``outer`` reach ``app`` under ``inner``; redirects come back out."""

    def __init__(self, app: Any, outer: str, inner: str) -> None:
        self.app = app
        self.outer, self.inner = outer, inner
        self._outer_b, self._inner_b = outer.encode(), inner.encode()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path == self.outer or path.startswith(self.outer + "/"):
            scope = dict(scope, path=self.inner + path[len(self.outer) :])
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(self._outer_b):
                scope["raw_path"] = self._inner_b + raw[len(self._outer_b) :]

        async def send_out(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v.replace(self._inner_b, self._outer_b) if k == b"location" else v)
                    for k, v in message.get("headers", [])
                ]
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_out)


async def _reply(send: Any, status: int, body: bytes, kind: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind + b"; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class Member:
    """The ASGI app a member serves: control paths, then 503 or the instance's UI."""

    def __init__(
        self, mlflow_app: Any, handover: Handover, proxy_secret: str | None, host: str
    ) -> None:
        self.mlflow_app = mlflow_app
        self.host = host
        self.handover = handover
        self.proxy_secret = proxy_secret
        self.served: Any = None
        self.state = "idle"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        path = scope.get("path")
        if scope["type"] == "http" and path in (HANDOVER_PATH, STATE_PATH):
            await self._control(scope, receive, send)
        elif self.served is not None:
            await self.served(scope, receive, send)
        elif scope["type"] == "http":
            await _reply(send, 503, _NO_TASK)
        else:
            await send({"type": "websocket.close", "code": 1013})

    async def _control(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        header = SECRET_HEADER.lower().encode()
        sent = [v for k, v in scope.get("headers", ()) if k == header]
        if not self.handover.authentic(sent):
            await _reply(send, 403, b"not the agent\n")
            return
        if scope["path"] == STATE_PATH:
            await _reply(send, 200, json.dumps({"state": self.state}).encode(), b"application/json")
            return
        if scope.get("method") != "POST":
            await _reply(send, 405, b"POST only\n")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY or not message.get("more_body"):
                break
        try:
            phases = Phases()
            prefix = await self.take(body)
            phases.mark("prepare store")
        except Refused as exc:
            self.state = "failed" if self.state != "serving" else self.state
            await _reply(send, exc.status, f"{exc}\n".encode())
            return
        except Exception as exc:  # StagingError and MLflow's own: one line to the agent
            self.state = "failed"
            await _reply(send, 422, f"{type(exc).__name__}: {exc}"[:300].encode())
            return
        from idds_vis.ui.proxy_guard import ProxyGuard
        from idds_vis.ui.readonly_gate import ReadOnlyGate

        swap = PrefixSwap(self.mlflow_app, prefix, MEMBER_PREFIX)
        served = ProxyGuard(ReadOnlyGate(swap, prefix), self.proxy_secret)
        await self._warm(served, prefix)
        phases.mark("first requests")
        print(phases.line().replace("start:", "hand-over:"), file=sys.stderr, flush=True)
        self.served = served
        self.state = "serving"
        await _reply(send, 200, json.dumps({"state": "serving"}).encode(), b"application/json")

    async def take(self, body: bytes) -> str:
        """Accept the hand-over and prepare its store; the instance's prefix (Refused, or the
        staging's and MLflow's own errors, if not). A standby pod's member stages its source
        here instead (``ui/pod_member.py``)."""
        assignment = self.handover.accept(body)
        self.state = "preparing"
        await asyncio.to_thread(_prepare, assignment.staged)
        return assignment.prefix

    async def _warm(self, served: Any, prefix: str) -> None:
        """The readiness probe's requests, once, in process: their first-time costs (the
        page from disk, the first query) are paid before the agent's probe."""
        headers = [(b"host", self.host.encode())]
        if self.proxy_secret:
            headers.append((PROXY_HEADER.lower().encode(), self.proxy_secret.encode()))
        search = json.dumps({"max_results": 1}).encode()
        await internal_request(served, "GET", f"{prefix}/health", headers)
        await internal_request(served, "GET", f"{prefix}/", headers)
        await internal_request(
            served, "POST", f"{prefix}/ajax-api/2.0/mlflow/experiments/search", headers, search
        )


async def internal_request(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    """One request to ``app`` in process, its answer dropped: a warm-up, never a check."""
    if body:
        headers = [*headers, (b"content-type", b"application/json")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}  # fmt: skip
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        pass

    with contextlib.suppress(Exception):  # the agent's probe tells what is wrong, not this
        await asyncio.wait_for(app(scope, receive, send), 10)


def _prepare(staged_dir: Path) -> None:
    """Blocking: prepare the store read-only, point MLflow at it and open it once."""
    from idds_vis.staging.info import read_staged_info
    from idds_vis.ui.store import prepare_store

    staged = read_staged_info(staged_dir)
    if Path(staged.root).resolve() != staged_dir:
        raise Refused(403, "the staged directory's record names another place")
    db = prepare_store(staged)
    store = f"sqlite:///file:{db}?mode=ro&uri=true"
    os.environ[BACKEND_STORE_URI_ENV_VAR] = store
    os.environ[REGISTRY_STORE_URI_ENV_VAR] = store
    os.environ[ARTIFACT_ROOT_ENV_VAR] = f"file://{db.parent}/no-new-artifacts"
    from mlflow.server import handlers

    handlers._get_tracking_store()  # the engine and schema check, before the first visitor


def start(
    *,
    host: str,
    port: int,
    instances: Path,
    workdir: Path,
    allowed_hosts: Sequence[str],
    cors_origins: Sequence[str],
) -> None:
    secret = os.environ.pop(SECRET_ENV, "")
    proxy_secret = os.environ.pop(PROXY_SECRET_ENV, None)
    handover = Handover(secret, instances)
    mlflow_app, _run_dir = load_mlflow(host, workdir, allowed_hosts, cors_origins)
    serve_asgi(Member(mlflow_app, handover, proxy_secret, host), host, port)


def load_mlflow(
    host: str, workdir: Path, allowed_hosts: Sequence[str], cors_origins: Sequence[str]
) -> tuple[Any, Path]:
    """MLflow's app built under ``MEMBER_PREFIX`` with no store yet, warmed, the process in
    its run directory: (the app, the run directory)."""
    run_dir, tmp_dir, home = run_dirs(workdir)
    os.environ["HOME"] = str(home)
    switches = mlflow_switches(
        Path("/nonexistent"), MEMBER_PREFIX, [*allowed_hosts, host], cors_origins, tmp_dir
    )
    for later in (BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR, ARTIFACT_ROOT_ENV_VAR):
        switches.pop(later)  # set by the hand-over
    os.environ.update(switches)
    leave_out_unused_modules()
    # What the hand-over's preparation and first requests use, imported now.
    for module in PRELOADED:
        importlib.import_module(module)
    cache_schema_head()
    from mlflow.server.fastapi_app import app as mlflow_app
    from mlflow.store.db.utils import _get_latest_schema_revision

    _get_latest_schema_revision()

    # One request through MLflow's app before any visitor: Starlette builds its middleware
    # stack and Flask its first request's state now (~0.17 s), not during a hand-over.
    asyncio.run(
        internal_request(mlflow_app, "GET", f"{MEMBER_PREFIX}/health", [(b"host", host.encode())])
    )
    os.chdir(run_dir)
    return mlflow_app, run_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idds_vis.ui.pool_member")
    add_listen_arguments(parser)
    parser.add_argument("--instances", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    if not os.environ.get(SECRET_ENV):
        raise SystemExit(f"error: a pool member needs {SECRET_ENV} in its environment")
    start(
        host=args.host,
        port=args.port,
        instances=args.instances,
        workdir=args.workdir,
        allowed_hosts=args.allowed_host,
        cors_origins=args.cors_origin,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
