"""``idds-vis agent`` as a separate process, the way it is deployed: a YAML config, JSON logs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CLI = [sys.executable, "-m", "idds_vis"]
START_GUARD = 120.0  # a hang guard for the start, not a timing assertion


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    log: Path
    state: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def check_running(self) -> None:
        assert self.proc.poll() is None, f"the agent exited:\n{self.log_tail()}"


@asynccontextmanager
async def running_agent(workdir: Path, settings: dict[str, Any]) -> AsyncIterator[AgentProcess]:
    """Start the agent with ``settings`` (state_dir defaults to ``workdir/state``), wait until it
    says it runs (subscribed, web app up), stop it with SIGTERM at the end: it must exit 0."""
    settings = {"state_dir": str(workdir / "state"), **settings}
    config = workdir / "agent.yaml"
    config.write_text(yaml.safe_dump(settings))
    log = workdir / "agent.log"
    proc = subprocess.Popen([*CLI, "--config", str(config), "agent"], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), text=True)  # fmt: skip
    agent = AgentProcess(proc, log, Path(settings["state_dir"]))
    try:
        async with asyncio.timeout(START_GUARD):
            while "agent running" not in log.read_text():
                agent.check_running()
                await asyncio.sleep(0.2)  # another process's output; nothing to wait on instead
        yield agent
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, agent.log_tail()
