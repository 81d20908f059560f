"""``idds-vis serve-ui``: stage, prepare read-only, then become the MLflow server (exec)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from idds_vis.domain.models import StagedArtefacts
from idds_vis.staging.credentials import ENV_PREFIXES as CREDENTIAL_ENV_PREFIXES
from idds_vis.staging.credentials import Credentials
from idds_vis.staging.info import read_staged_info, write_staged_info
from idds_vis.ui.store import prepare_store


def stage_source(source: str, workdir: Path, max_bytes: int, max_files: int) -> StagedArtefacts:
    from idds_vis.staging import ArchiveStager

    # In a UI pod the credentials come from the Secret the deployer made (IDDS_VIS_* variables).
    credentials = Credentials.from_env(os.environ)
    stager = ArchiveStager(
        max_bytes=max_bytes, max_files=max_files, credentials=lambda: credentials
    )
    staged = asyncio.run(stager.stage(source, workdir / "staged"))
    write_staged_info(staged)
    return staged


def allowed_host_list(hosts: Sequence[str]) -> str:
    # MLflow matches the Host header literally: list every host bare and with any port.
    out: list[str] = []
    for host in hosts:
        for form in (host, f"{host}:*"):
            if form not in out:
                out.append(form)
    return ",".join(out)


def server_env(
    db: Path, prefix: str, hosts: Sequence[str], cors_origins: Sequence[str], tmpdir: Path
) -> dict[str, str]:
    """The environment ``mlflow server --workers 1`` would give its uvicorn child, job runner off.

    Running that child directly saves the CLI parent process (about half the memory) and its
    second import of mlflow.
    """
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

    # mode=ro makes every write fail (503) whatever the UI tries; uri=true enables the mode.
    store = f"sqlite:///file:{db}?mode=ro&uri=true"
    env = dict(os.environ)
    env.update(
        {
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
    )
    if cors_origins:
        env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(cors_origins)
    return env


def serve_ui(
    *,
    source: str | None,
    staged_dir: Path | None,
    prefix: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str],
    cors_origins: Sequence[str],
    workdir: Path | None,
    max_bytes: int,
    max_files: int,
) -> NoReturn:
    if staged_dir is not None:
        staged = read_staged_info(staged_dir)
        work = staged_dir.parent
    elif source is not None:
        work = workdir or Path(tempfile.mkdtemp(prefix="idds-vis-ui-"))
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)
        staged = stage_source(source, work, max_bytes, max_files)
    else:
        raise SystemExit("serve-ui needs --source or --staged")
    db = prepare_store(staged)
    # Staged: the MLflow server, which inherits this environment, has no use for credentials.
    for name in [n for n in os.environ if n.startswith(CREDENTIAL_ENV_PREFIXES)]:
        del os.environ[name]
    # The server keeps scratch files (and a stray 'file:' directory from the sqlite URI form)
    # in its working directory: give it a writable one outside the read-only data.
    run_dir = work / "run"
    tmp_dir = run_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(db, prefix, [*allowed_hosts, host], cors_origins, tmp_dir)
    from mlflow.server import _UVICORN_LOG_CONFIG

    argv = [
        sys.executable, "-m", "uvicorn",
        "--log-config", str(_UVICORN_LOG_CONFIG),
        "--host", host, "--port", str(port), "--workers", "1",
        "mlflow.server.fastapi_app:app",
    ]  # fmt: skip
    os.chdir(run_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
