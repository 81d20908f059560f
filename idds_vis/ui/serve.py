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
from idds_vis.domain.source_policy import AddressPolicy
from idds_vis.domain.ui_environment import ui_environment
from idds_vis.staging.credentials import Credentials
from idds_vis.staging.info import read_staged_info, write_staged_info
from idds_vis.ui.proxy_guard import SECRET_ENV as PROXY_SECRET_ENV
from idds_vis.ui.readonly_gate import check_prefix
from idds_vis.ui.store import prepare_store

# The ASGI app uvicorn serves: MLflow's, behind the read-only allowlist (ui/readonly_gate.py).
GATED_APP = "idds_vis.ui.gated_app:app"


def stage_source(
    source: str,
    workdir: Path,
    max_bytes: int,
    max_files: int,
    guard: AddressPolicy | None = None,
) -> StagedArtefacts:
    """``guard``: the source was named by a broker message, so its downloads reach no
    loopback, private or link-local address the policy does not list (as the agent's own
    staging of such a source, ``idds_vis.staging.guarded``)."""
    from idds_vis.staging import ArchiveStager
    from idds_vis.staging.download import guarded

    # In a UI pod the credentials come from the Secret the deployer made (IDDS_VIS_* variables).
    credentials = Credentials.from_env(os.environ)
    stager = ArchiveStager(
        max_bytes=max_bytes, max_files=max_files, credentials=lambda: credentials
    )

    async def stage() -> StagedArtefacts:
        if guard is None:
            return await stager.stage(source, workdir / "staged")
        with guarded(guard):
            return await stager.stage(source, workdir / "staged")

    staged = asyncio.run(stage())
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
    db: Path,
    prefix: str,
    hosts: Sequence[str],
    cors_origins: Sequence[str],
    tmpdir: Path,
    home: Path,
) -> dict[str, str]:
    """The environment ``mlflow server --workers 1`` would give its uvicorn child, job runner off.

    Running that child directly saves the CLI parent process (about half the memory) and its
    second import of mlflow. Built from an allowlist (domain/ui_environment.py), not from this
    process's environment: in a pod that holds the staging credentials and whatever the image
    and the cluster add, locally the agent's environment. HOME is private to the instance.
    """
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

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
    if os.environ.get(PROXY_SECRET_ENV):  # the local deployer's: the UI answers its proxy only
        switches[PROXY_SECRET_ENV] = os.environ[PROXY_SECRET_ENV]
    return ui_environment(os.environ, home=str(home), extra=switches)


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
    guard: AddressPolicy | None = None,
) -> NoReturn:
    try:
        check_prefix(prefix)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if staged_dir is not None:
        staged = read_staged_info(staged_dir)
        work = staged_dir.parent
    elif source is not None:
        work = workdir or Path(tempfile.mkdtemp(prefix="idds-vis-ui-"))
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)
        staged = stage_source(source, work, max_bytes, max_files, guard)
    else:
        raise SystemExit("serve-ui needs --source or --staged")
    # The server keeps scratch files (and a stray 'file:' directory from the sqlite URI form)
    # in its working directory: give it a writable one outside the read-only data. Its HOME is
    # there too: private to the instance, empty, so no ~/.aws or ~/.mlflow of anyone is seen.
    run_dir = work / "run"
    tmp_dir = run_dir / "tmp"
    home = run_dir / "home"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(mode=0o700, exist_ok=True)
    os.environ["HOME"] = str(home)  # for MLflow imported below, in this process already
    db = prepare_store(staged)
    # The server gets an allowlisted environment: the staging credentials, and anything else
    # this process inherited, stay behind.
    env = server_env(db, prefix, [*allowed_hosts, host], cors_origins, tmp_dir, home)
    from mlflow.server import _UVICORN_LOG_CONFIG

    argv = [
        sys.executable, "-m", "uvicorn",
        "--log-config", str(_UVICORN_LOG_CONFIG),
        "--host", host, "--port", str(port), "--workers", "1",
        # MLflow's start-up hook reaps the assistant's Docker containers and sandbox homes:
        # nothing these UIs ever start, and not theirs to touch on a shared machine.
        "--lifespan", "off",
        GATED_APP,
    ]  # fmt: skip
    os.chdir(run_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
