"""Finding and stopping the UI processes of one local deployer (blocking: run in a thread)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

import psutil

LABEL_FLAG = "--label"
NAME_FLAG = "--instance"


@dataclass(frozen=True)
class UIProcess:
    pid: int
    name: str
    port: int | None


def _flag(cmdline: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def find_ui_processes(label: str) -> list[UIProcess]:
    """UIs carrying this deployer's label; the label keeps agents on one machine apart.

    The label and instance name are on the command line of the process; after the exec into
    uvicorn they live on in the environment, which is where a restarted agent finds them.
    """
    found: list[UIProcess] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("IDDS_VIS_UI_LABEL") != label:
            continue
        name = env.get("IDDS_VIS_UI_NAME")
        if not name:
            continue
        port = env.get("IDDS_VIS_UI_PORT")
        found.append(UIProcess(proc.pid, name, int(port) if port else None))
    return found


def ui_process(pid: int, label: str) -> UIProcess | None:
    """The UI with this pid, if it still runs and carries this deployer's label."""
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    name = env.get("IDDS_VIS_UI_NAME")
    if env.get("IDDS_VIS_UI_LABEL") != label or not name:
        return None
    port = env.get("IDDS_VIS_UI_PORT")
    return UIProcess(pid, name, int(port) if port else None)


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
