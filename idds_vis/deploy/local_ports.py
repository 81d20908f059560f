"""Ports for local UIs, chosen so that hundreds of UIs and several agents never collide.

Two races are closed. A port from ``bind(port 0)`` comes from the kernel's ephemeral range,
which every outgoing connection (probes, the database, the broker) also draws from, so between
the choice and the UI's own bind a client socket may take it: ports are drawn from below that
range instead. And two agents may draw the same port in the seconds before either UI binds
(seen: "Address already in use" at 300 UIs from 3 agents): each drawn port is reserved by
creating a file named after it, atomically (``O_EXCL``), in a directory every agent of this
user on the machine shares. A reservation expires after ``HOLD`` seconds, by which time its UI
listens (and ``bind`` tells the port is in use) or has failed to start.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Collection
from pathlib import Path

LOWEST = 10_000
HOLD = 600.0  # longer than any UI takes to start listening (start_timeout: 3 min by default)
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_ATTEMPTS = 200


def reservations_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"idds-vis-ports-{os.getuid()}"


def ephemeral_floor() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _reserve(directory: Path, port: int, now: float) -> bool:
    """Take the reservation of ``port``; False when another agent holds a live one."""
    path = directory / str(port)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        pass
    try:
        if now - path.stat().st_mtime < HOLD:
            return False
        # Expired: move it aside first, so of two agents reclaiming it only one succeeds.
        aside = directory / f"{port}.{uuid.uuid4().hex}.expired"
        path.rename(aside)
        aside.unlink()
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except (FileNotFoundError, FileExistsError):
        return False  # another agent reclaimed it meanwhile


def pick_port(host: str, taken: Collection[int], directory: Path | None = None) -> int:
    """A port below the ephemeral range that no UI was given, nothing is bound to, and no
    other agent is handing out right now."""
    directory = directory or reservations_dir()
    with contextlib.suppress(OSError):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    top = ephemeral_floor()
    if top > LOWEST and directory.is_dir():
        for _ in range(_ATTEMPTS):
            port = random.randrange(LOWEST, top)
            if port in taken or not _reserve(directory, port, time.time()):
                continue
            if _bindable(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening_socket(host: str, port: int) -> socket.socket:
    """``host:port`` bound and listening, inheritable: the UI process is given this socket
    (``LISTEN_FD_ENV``) instead of binding the port itself, so between the choice and the UI's
    start no other local user can take the port and catch the probes' proxy secret."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def pick_and_listen(host: str, taken: Collection[int]) -> socket.socket:
    """A free port as ``pick_port`` chooses it, already listening (a few tries: a port found
    free may be taken before the bind)."""
    for _ in range(4):
        with contextlib.suppress(OSError):
            return listening_socket(host, pick_port(host, taken))
    return listening_socket(host, pick_port(host, taken))  # the last try's error is the answer
