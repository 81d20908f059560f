"""The UI process: prepare the staged store read-only and serve it with uvicorn, in one
interpreter, so MLflow is imported once (issue 18).

``python -m idds_vis.ui.uvicorn_server --staged <dir> --prefix /vis/<name> --port <p> ...``
takes the same arguments as the stand-in UI (``ui/stub.py``). The local deployer starts it
directly, with the allowlisted environment of ``domain/ui_environment.py``; ``idds-vis
serve-ui`` (a pod's entrypoint) stages the source with its credentials, then execs it with that
same allowlisted environment, so no staging secret reaches the process MLflow runs in.

Before, serve-ui imported MLflow to prepare the store and then exec'd uvicorn, which imported
MLflow and its app a second time. Here the switches MLflow reads are set first (telemetry off,
private HOME, the read-only store, prefix, allowed hosts, CORS), then the store is prepared,
then the app (``ui/gated_app.py``: proxy guard, read-only gate, MLflow) is imported and served
by uvicorn in this process, one worker, no lifespan. Each phase's cost goes to the log.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from idds_vis.domain.naming import PREFIX_ENV

# MLflow's names for what its server reads (mlflow.server.constants and .handlers); spelled
# out because importing those modules builds MLflow's app before its switches are set. A unit
# test checks they agree with the installed MLflow.
BACKEND_STORE_URI_ENV_VAR = "_MLFLOW_SERVER_FILE_STORE"
REGISTRY_STORE_URI_ENV_VAR = "_MLFLOW_SERVER_REGISTRY_STORE"
ARTIFACT_ROOT_ENV_VAR = "_MLFLOW_SERVER_ARTIFACT_ROOT"
STATIC_PREFIX_ENV_VAR = "_MLFLOW_STATIC_PREFIX"

# What MLflow's server imports but a read-only UI never uses: about 50 MB of a UI's memory
# (pyarrow's libraries, scipy; pygments, which Mako uses for tracebacks only;
# prometheus_client, for counters of OTLP trace ingestion, a write this UI refuses: ~0.7 MB).
# Each is imported inside try/except ImportError.
UNUSED_MODULES = ("pyarrow", "scipy", "pygments", "prometheus_client")


def leave_out_unused_modules() -> None:
    """Make the modules of UNUSED_MODULES unimportable in this process (before MLflow)."""
    for name in UNUSED_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


_REVISION = re.compile(r"""^revision\s*(?::[^=]*)?=\s*["']([0-9a-f]+)["']""", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.*)$", re.M)


def schema_head() -> str | None:
    """MLflow's newest schema revision, read from its migration scripts' ``revision`` and
    ``down_revision`` lines (the one no script names as its parent); None when that is not
    exactly one. Alembic would import all ~70 scripts for this: ~0.9 MB and up to 0.4 s."""
    spec = importlib.util.find_spec("mlflow.store.db_migrations")
    if spec is None or not spec.submodule_search_locations:
        return None
    revisions: set[str] = set()
    parents: set[str] = set()
    for location in spec.submodule_search_locations:
        for script in Path(location, "versions").glob("*.py"):
            text = script.read_text(errors="replace")
            found = _REVISION.search(text)
            if found is None:
                continue
            revisions.add(found.group(1))
            down = _DOWN_REVISION.search(text)
            if down is not None:
                parents.update(re.findall(r"[0-9a-f]{6,}", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def cache_schema_head() -> None:
    """MLflow looks up its newest schema revision by loading its Alembic scripts, twice per
    start (the upgrade check, then the store's own check). It is a constant of the installed
    MLflow: a UI process reads it once from the scripts' text (Alembic's own lookup, cached,
    if that fails)."""
    from mlflow.store.db import utils

    if getattr(utils._get_latest_schema_revision, "idds_vis", False):
        return
    head = schema_head()
    lookup: Callable[[], str] = (
        functools.cache(utils._get_latest_schema_revision) if head is None else lambda: head
    )
    lookup.idds_vis = True  # type: ignore[attr-defined]
    utils._get_latest_schema_revision = lookup


def allowed_host_list(hosts: Sequence[str]) -> str:
    # MLflow matches the Host header literally: list every host bare and with any port.
    out: list[str] = []
    for host in hosts:
        for form in (host, f"{host}:*"):
            if form not in out:
                out.append(form)
    return ",".join(out)


def mlflow_switches(
    db: Path, prefix: str, hosts: Sequence[str], cors_origins: Sequence[str], tmpdir: Path
) -> dict[str, str]:
    """What ``mlflow server --workers 1`` would set for its uvicorn child, job runner off."""
    # mode=ro makes every write fail (503) whatever the UI tries; uri=true enables the mode.
    store = f"sqlite:///file:{db}?mode=ro&uri=true"
    switches = {
        BACKEND_STORE_URI_ENV_VAR: store,
        REGISTRY_STORE_URI_ENV_VAR: store,
        ARTIFACT_ROOT_ENV_VAR: f"file://{db.parent}/no-new-artifacts",
        STATIC_PREFIX_ENV_VAR: prefix,
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_host_list(hosts),
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_SERVER_BOOT_ID": uuid.uuid4().hex,
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_WORKSPACES": "false",
        "TMPDIR": str(tmpdir),
    }
    if cors_origins:
        switches["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(cors_origins)
    return switches


def run_dirs(work: Path) -> tuple[Path, Path, Path]:
    """The server's scratch directory (and a stray 'file:' one from the sqlite URI form), its
    TMPDIR and its HOME: outside the read-only data, private to the instance."""
    run_dir = work / "run"
    tmp_dir = run_dir / "tmp"
    home = run_dir / "home"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(mode=0o700, exist_ok=True)
    return run_dir, tmp_dir, home


class Phases:
    """Seconds per start-up phase, written to the UI's log in one line once it listens."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.done: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.done.append((phase, now - self.t))
        self.t = now

    def line(self) -> str:
        return "idds-vis ui start: " + ", ".join(f"{p} {s:.2f} s" for p, s in self.done)


def serve_asgi(app: Any, host: str, port: int, phases: Phases | None = None) -> None:
    """Serve ``app`` as ``uvicorn --workers 1 --lifespan off`` with MLflow's log format.

    MLflow's start-up hook reaps the assistant's Docker containers and sandbox homes: nothing
    these UIs ever start, and not theirs to touch on a shared machine, hence no lifespan.
    """
    import uvicorn
    from mlflow.server import _UVICORN_LOG_CONFIG

    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_config=str(_UVICORN_LOG_CONFIG)
    )
    server = uvicorn.Server(config)
    if phases is not None:
        phases.mark("serve setup")
        print(phases.line(), file=sys.stderr, flush=True)
    from idds_vis.ui.listen import inherited_socket

    sock = inherited_socket()  # the agent's, already listening: nobody else held the port
    server.run(sockets=[sock] if sock is not None else None)


def serve_staged(
    *,
    staged_dir: Path,
    prefix: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str],
    cors_origins: Sequence[str],
) -> None:
    """Prepare ``staged_dir``'s store and serve it; returns when the server stops."""
    from idds_vis.domain.errors import VisError
    from idds_vis.staging.info import read_staged_info
    from idds_vis.ui.readonly_gate import check_prefix
    from idds_vis.ui.store import PREPARED_DB, prepare_store

    phases = Phases()
    try:
        check_prefix(prefix)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    staged = read_staged_info(staged_dir)
    run_dir, tmp_dir, home = run_dirs(staged_dir.parent)
    db = Path(staged.root) / PREPARED_DB
    # The switches first: MLflow reads some at import (telemetry, HOME), its server at app
    # creation (prefix, hosts, CORS) or at the first request (the store).
    os.environ["HOME"] = str(home)
    os.environ.update(mlflow_switches(db, prefix, [*allowed_hosts, host], cors_origins, tmp_dir))
    leave_out_unused_modules()
    cache_schema_head()
    try:
        prepared = prepare_store(staged)
    except VisError as exc:
        raise SystemExit(f"error: {exc}") from None
    assert prepared == db
    phases.mark("prepare store")
    os.chdir(run_dir)
    from idds_vis.ui.gated_app import app

    phases.mark("import app")
    serve_asgi(app, host, port, phases)


def add_listen_arguments(parser: argparse.ArgumentParser, host: str = "127.0.0.1") -> None:
    """Where a UI process listens and whom MLflow answers: the same options for every kind
    (a cold UI, a pool member, a standby pod, the stand-in)."""
    parser.add_argument("--host", default=host)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--allowed-host", action="append", default=[])
    parser.add_argument("--cors-origin", action="append", default=[])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idds_vis.ui.uvicorn_server")
    parser.add_argument("--staged", type=Path, required=True)
    # The local deployer passes the prefix in the environment (it holds the path token).
    parser.add_argument("--prefix", default=os.environ.get(PREFIX_ENV))
    add_listen_arguments(parser)
    args = parser.parse_args(argv)
    if not args.prefix:
        parser.error(f"--prefix (or {PREFIX_ENV}) is required")
    if not args.staged.is_dir():
        raise SystemExit(f"error: --staged {args.staged} is not a directory")
    serve_staged(
        staged_dir=args.staged,
        prefix=args.prefix,
        host=args.host,
        port=args.port,
        allowed_hosts=args.allowed_host,
        cors_origins=args.cors_origin,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
