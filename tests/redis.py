"""A throwaway Redis server for the test session, run from Debian's ``redis-server`` package.

iDDS's agents keep a cache in Redis (``[cache] host/port`` in idds.cfg), so the real iDDS the
integration tests start needs one. ``throwaway_redis()`` runs ``redis-server`` in the
foreground on a free loopback port with persistence off (no RDB snapshots, no AOF) and its
working directory in a temporary directory, and stops it (SIGTERM, then SIGKILL) on exit.
``redis_server`` is the session fixture: a ``RedisAddress`` for the whole run, started on
first use only; it skips the tests that need it when the package is missing.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

SETUP_HINT = (
    "run `bash tests/run.sh` once (it installs Debian's redis-server package), "
    "or `apt-get install redis-server`"
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# A port taken between our probe and the server's bind makes it exit; try a few others.
_START_ATTEMPTS = 3


class RedisMissing(RuntimeError):
    """Debian's redis-server package is not installed."""


class RedisAddress(NamedTuple):
    host: str
    port: int


def find_redis_server() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RedisMissing(f"redis-server not found: {SETUP_HINT}")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(address: RedisAddress, timeout: float = 1.0) -> bool:
    """True if the server answers an inline PING with +PONG."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], address: RedisAddress, log: Path) -> bool:
    """True once it answers PING; False if it exited (e.g. the port was taken meanwhile)."""
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None:
        if ping(address):
            return True
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(
                f"redis-server did not answer within {START_TIMEOUT:.0f} s:\n{log.read_text()}"
            )
        time.sleep(0.02)  # polling an external process's port; nothing to wait on instead
    return False


@contextmanager
def throwaway_redis(executable: str | None = None) -> Iterator[RedisAddress]:
    executable = executable or find_redis_server()
    root = Path(tempfile.mkdtemp(prefix="idds-vis-redis-"))
    log = root / "redis.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(_START_ATTEMPTS):
            address = RedisAddress("127.0.0.1", _free_port())
            command = [
                executable,
                "--bind", "127.0.0.1",
                "--port", str(address.port),
                "--dir", str(root),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--logfile", str(log),
            ]  # fmt: skip
            # A session of its own: a Ctrl-C aimed at pytest does not kill it mid-test.
            proc = subprocess.Popen(
                command, cwd=root, stdin=subprocess.DEVNULL, start_new_session=True
            )
            if _wait_ready(proc, address, log):
                break
        else:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"redis-server did not start:\n{tail}")
        yield address
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisAddress]:
    try:
        executable = find_redis_server()
    except RedisMissing as exc:
        pytest.skip(str(exc))
    with throwaway_redis(executable) as address:
        yield address
