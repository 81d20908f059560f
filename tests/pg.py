"""A throwaway PostgreSQL server for the test session, started from Debian's packages.

``throwaway_postgres()`` runs ``initdb`` and ``pg_ctl -w start`` in a temporary directory (as
the ``postgres`` OS user when the tests run as root, since PostgreSQL refuses root), listens on
127.0.0.1 with trust authentication, and stops and deletes everything on exit.
``fresh_database()`` gives each test an empty database on such a server (or on the server
named by ``IDDS_VIS_TEST_PG_URL``, whose user must be allowed to create databases).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ENV_URL = "IDDS_VIS_TEST_PG_URL"
DATABASE = "idds_vis_test"
SETUP_HINT = (
    "run `bash tests/run.sh` once (it installs Debian's postgresql package), "
    f"or set {ENV_URL}=postgresql://user@host:port/db to use a server you already have"
)
_NEEDED = ("initdb", "pg_ctl", "createdb")
# A port taken between our probe and the server's bind makes pg_ctl fail; try a few others.
_START_ATTEMPTS = 3


class PostgresMissing(RuntimeError):
    """The PostgreSQL server binaries (or the ``postgres`` user) are not on this machine."""


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl: PATH first, then the newest Debian version."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidates.append(Path(found))
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in _NEEDED):
            return directory
    raise PostgresMissing(
        f"PostgreSQL server binaries ({', '.join(_NEEDED)}) not found: {SETUP_HINT}"
    )


def _as_server_user(root: Path) -> list[str]:
    """The command prefix that runs a tool as the user owning ``root``."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissing(f"no 'postgres' OS user to run the server as: {SETUP_HINT}") from None
    os.chown(root, account.pw_uid, account.pw_gid)
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["su", "postgres", "-s", "/bin/sh", "-c"]  # joined into one string by _run


def _run(
    prefix: list[str], args: list[str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, shlex.join(args)] if prefix[:1] == ["su"] else [*prefix, *args]
    # cwd: the postgres user cannot enter root's working directory, and initdb checks it.
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def throwaway_postgres(bin_dir: Path | None = None) -> Iterator[str]:
    """Start a private server; yield ``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``."""
    bin_dir = bin_dir or find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="idds-vis-pg-"))
    data, log = root / "data", root / "server.log"
    prefix: list[str] = []
    started = False

    def tool(name: str, *args: str, check: bool = True) -> int:
        return _run(prefix, [str(bin_dir / name), *args], root, check=check).returncode

    try:
        prefix = _as_server_user(root)
        tool("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync")  # fmt: skip
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            # Durability is pointless for a server deleted at the end; fsync off makes it fast.
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            # -w: pg_ctl returns once the server accepts connections (or has given up).
            start = ("-D", str(data), "-l", str(log), "-w", "-t", "120", "-o", options, "start")
            if tool("pg_ctl", *start, check=False) == 0:
                started = True
                break
        if not started:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"the throwaway PostgreSQL server did not start:\n{tail}")
        tool("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            tool("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """Create an empty database on the server of ``server_url``; yield its URL; drop it."""
    url = make_url(server_url)
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"idds_vis_t_{uuid.uuid4().hex[:16]}"  # a generated identifier: safe to quote as is
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            # FORCE: a test that failed mid-way may have left connections open.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def server_cpu() -> float:
    """CPU seconds so far of every PostgreSQL server process on this machine (benchmarks)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("postgres"):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total
