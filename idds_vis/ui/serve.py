"""``idds-vis serve-ui``: stage, then become the UI process (exec ``ui/uvicorn_server.py``)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from idds_vis.domain.models import StagedArtefacts
from idds_vis.domain.source_policy import AddressPolicy
from idds_vis.domain.ui_environment import ui_environment
from idds_vis.staging.credentials import Credentials
from idds_vis.staging.info import read_staged_info, write_staged_info
from idds_vis.ui.proxy_guard import SECRET_ENV as PROXY_SECRET_ENV
from idds_vis.ui.readonly_gate import check_prefix
from idds_vis.ui.uvicorn_server import run_dirs

# The UI process: prepares the store and serves MLflow's app behind the read-only allowlist.
UI_SERVER = "idds_vis.ui.uvicorn_server"


def stage_source(
    source: str,
    workdir: Path,
    max_bytes: int,
    max_files: int,
    guard: AddressPolicy | None = None,
    env: Mapping[str, str] | None = None,
) -> StagedArtefacts:
    """``guard``: the source was named by a broker message, so its downloads reach no
    loopback, private or link-local address the policy does not list (as the agent's own
    staging of such a source, ``idds_vis.staging.guarded``). ``env``: where the credentials
    are (a standby pod's hand-over, ``ui/pod_member.py``); None: this process's environment."""
    from idds_vis.staging import ArchiveStager
    from idds_vis.staging.download import guarded

    # In a UI pod the credentials come from the Secret the deployer made (IDDS_VIS_* variables).
    credentials = Credentials.from_env(os.environ if env is None else env)
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
    # The UI process gets an allowlisted environment (domain/ui_environment.py): the staging
    # credentials, and anything else this process inherited, stay behind. It prepares the
    # store and serves it in one interpreter, so MLflow is imported once (ui/uvicorn_server.py).
    _run_dir, _tmp_dir, home = run_dirs(work)
    extra = {}
    if os.environ.get(PROXY_SECRET_ENV):  # the local deployer's: the UI answers its proxy only
        extra[PROXY_SECRET_ENV] = os.environ[PROXY_SECRET_ENV]
    env = ui_environment(os.environ, home=str(home), extra=extra)
    argv = [sys.executable, "-m", UI_SERVER, "--staged", str(Path(staged.root)),
            "--prefix", prefix, "--host", host, "--port", str(port)]  # fmt: skip
    for allowed in allowed_hosts:
        argv += ["--allowed-host", allowed]
    for origin in cors_origins:
        argv += ["--cors-origin", origin]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
