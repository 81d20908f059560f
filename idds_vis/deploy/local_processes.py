"""Finding and stopping the UI processes of one local deployer (blocking: run in a thread)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

LABEL_FLAG = "--label"
NAME_FLAG = "--instance"
# A warm pool's member (deploy/pool.py) carries its id instead of an instance name: the name
# of the instance it was handed is in <pool dir>/<id>/instance, written before the hand-over.
MEMBER_ENV = "IDDS_VIS_POOL_MEMBER"
VERSION_ENV = "IDDS_VIS_POOL_VERSION"
CLAIM_FILE = "instance"
MEMBER_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class UIProcess:
    pid: int
    name: str
    port: int | None
    member: str | None = None  # the pool member id, when the UI was a pool member


@dataclass(frozen=True)
class PoolProcess:
    pid: int
    member: str
    port: int | None
    version: str
    started: float  # the process's start, seconds since the epoch
    claimed_by: str | None  # the instance it was handed, None while idle


def claimed_name(pool_dir: Path | None, member: str) -> str | None:
    """The instance a pool member was handed, from its claim file; None while idle."""
    if pool_dir is None or not MEMBER_ID.fullmatch(member):
        return None
    try:
        fd = os.open(pool_dir / member / CLAIM_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as found:
        return found.read(512).strip() or None


def _ours(proc: psutil.Process) -> bool:
    """Only this user's processes are the agent's. An agent running as root can read every
    process's environment, where another local user may put this deployer's label (derived
    from the state dir, which members show on their command line), a UI name of their choosing
    (the reconciler then removes ``instances/<name>``) or a pool member's id (a twin that takes
    the member's hand-over secret): the environment alone proves nothing (red team, issue 18)."""
    try:
        return bool(proc.uids().real == os.getuid())
    except (psutil.Error, OSError):
        return False


def _describe(pid: int, env: dict[str, str], label: str, pool_dir: Path | None) -> UIProcess | None:
    if env.get("IDDS_VIS_UI_LABEL") != label:
        return None
    name = env.get("IDDS_VIS_UI_NAME")
    member = env.get(MEMBER_ENV)
    if not name and member:
        name = claimed_name(pool_dir, member)
    if not name:
        return None
    port = env.get("IDDS_VIS_UI_PORT")
    return UIProcess(pid, name, int(port) if port else None, member)


def _flag(cmdline: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def find_ui_processes(label: str, pool_dir: Path | None = None) -> list[UIProcess]:
    """UIs carrying this deployer's label; the label keeps agents on one machine apart.

    The label and instance name are in the environment the deployer gave the process, which
    is where a restarted agent finds them; a pool member's name is in its claim file under
    ``pool_dir`` (idle members are no UI yet: ``find_pool_members``).
    """
    found: list[UIProcess] = []
    for proc in psutil.process_iter(["pid"]):
        if not _ours(proc):
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        ui = _describe(proc.pid, env, label, pool_dir)
        if ui is not None:
            found.append(ui)
    return found


def ui_process(pid: int, label: str, pool_dir: Path | None = None) -> UIProcess | None:
    """The UI with this pid, if it still runs and carries this deployer's label."""
    try:
        proc = psutil.Process(pid)
        env = proc.environ() if _ours(proc) else {}
    except (psutil.Error, OSError):
        return None
    return _describe(pid, env, label, pool_dir)


def find_pool_members(label: str, pool_dir: Path) -> list[PoolProcess]:
    """Every pool member process of this deployer's label, idle or claimed."""
    found: list[PoolProcess] = []
    for proc in psutil.process_iter(["pid"]):
        if not _ours(proc):
            continue
        try:
            env = proc.environ()
            started = proc.create_time()
        except (psutil.Error, OSError):
            continue
        member = env.get(MEMBER_ENV)
        if env.get("IDDS_VIS_UI_LABEL") != label or not member or not MEMBER_ID.fullmatch(member):
            continue
        port = env.get("IDDS_VIS_UI_PORT")
        found.append(
            PoolProcess(
                proc.pid, member, int(port) if port else None, env.get(VERSION_ENV, ""),
                started, claimed_name(pool_dir, member),
            )
        )  # fmt: skip
    return found


def is_member(pid: int, member: str) -> bool:
    """Whether ``pid`` is still pool member ``member``, running: not only some process. A
    member that died frees its port to any local user; a process that got its pid (pids are
    reused, and can be cycled to) would pass a liveness check, and the hand-over would then go
    to the port with the member's secret, and behind the web app the visitors after it."""
    try:
        proc = psutil.Process(pid)
        return (
            _ours(proc)
            and proc.environ().get(MEMBER_ENV) == member
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, OSError):
        return False


def stop_process_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the UI's process group, then SIGKILL what is left after the grace period."""
    try:
        proc = psutil.Process(pid)
        pgid = os.getpgid(pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    members = [proc, *_group_members(pgid, pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(sig)
        alive = _still_running(members, grace)
        if not alive:
            return
        members = alive


def _still_running(members: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The members still running after at most ``timeout`` seconds.

    A zombie counts as stopped: it has exited, and its parent reaps it. psutil.wait_procs
    waits for that reaping too, which for the UIs of an agent that died is init's job: seen
    taking ~2 s per process in a container, and forever under an init that never reaps.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        alive = [m for m in members if _running(m)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.1)


def _running(proc: psutil.Process) -> bool:
    try:  # is_running() is False once the pid belongs to another process
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(pgid: int, leader: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != leader and os.getpgid(proc.pid) == pgid:
                out.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return out


def exit_code(pid: int) -> int | None:
    """None while the process runs; the code once it has exited (or -1 if unknown)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return proc.wait(timeout=0) or -1
        return None
    except psutil.NoSuchProcess:
        return -1
    except psutil.TimeoutExpired:
        return None
