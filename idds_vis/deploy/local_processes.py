"""Finding and stopping the UI processes of one local deployer (blocking: run in a thread)."""

from __future__ import annotations

import contextlib
import os
import signal
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
        _gone, alive = psutil.wait_procs(members, timeout=grace)
        if not alive:
            return
        members = alive


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
