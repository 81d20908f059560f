"""A real ``idds-vis serve-ui`` on the demo training's artefacts, for the UI attack tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from idds_vis.staging.permissions import make_writable

PREFIX = "/vis/mlflow-4242-sec"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class UI:
    pid: int
    base: str  # http://127.0.0.1:<port>  (no prefix)
    url: str  # base + prefix + "/"
    workdir: Path


@asynccontextmanager
async def serve_ui(source: Path, workdir: Path, env: Mapping[str, str]) -> AsyncIterator[UI]:
    """serve-ui started as the container entrypoint starts it, with ``env`` as its environment."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idds_vis", "serve-ui", "--source", str(source),
        "--prefix", PREFIX, "--port", str(port), "--workdir", str(workdir),
        env=dict(env), start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    ui = UI(proc.pid, base, f"{base}{PREFIX}/", workdir)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(180):  # a hang guard
            while True:
                assert proc.returncode is None, "serve-ui exited early"
                try:
                    async with http.get(ui.url + "health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        yield ui
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()
        make_writable(workdir)


def agent_environment(home: Path, **extra: str) -> dict[str, str]:
    """The test run's environment as an agent's, with a HOME of the test's own."""
    return {**os.environ, "HOME": str(home), **extra}


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory under ``roots``: size, mtime (ns) and mode."""
    out: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            st = path.lstat()
            out[str(path)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out
