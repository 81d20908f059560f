"""What the web-app access abuse tests share: the real web app on loopback over a real SQLite
ledger and a running agent (stand-in stager and deployer), with chosen settings. A client
"from the network" is one whose request a trusted proxy (this loopback peer, listed in
``trusted_proxies``) forwards with ``X-Forwarded-For``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.fakes import FakeDeployer, make_agent
from tests.web_support import TableStarter, Task

# Tasks named user.jdoe.t0 ... t5 (ids 5000 ...), finished with outputs.
TASKS = {f"user.jdoe.t{i}": Task(str(5000 + i), source=f"file:///outputs/{5000 + i}")
         for i in range(6)}  # fmt: skip
LOOPBACK_PROXY = ["127.0.0.1/32"]


def path(i: int) -> str:
    return f"/t/user.jdoe.t{i}/mlflow"


def via_proxy(client: str) -> dict[str, str]:
    return {"X-Forwarded-For": client}


@dataclass
class Site:
    agent: Agent
    app: web.Application
    http: aiohttp.ClientSession
    url: str

    async def denied(self) -> dict[str, float]:
        """``idds_vis_access_denied_total`` by reason, from /metrics."""
        async with self.http.get("/metrics") as resp:
            text = await resp.text()
        found = re.findall(r'idds_vis_access_denied_total\{reason="(\w+)"\} ([0-9.]+)', text)
        return {reason: float(value) for reason, value in found}


@contextlib.asynccontextmanager
async def web_app(tmp_path: Path, poll_interval: float = 0.05, **settings: Any
                  ) -> AsyncIterator[Site]:  # fmt: skip
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    agent = make_agent(ledger, FakeDeployer(tmp_path / "uis"))
    await agent.start()
    app = make_app(agent, Settings(state_dir=tmp_path, **settings), TableStarter(agent, TASKS),
                   poll_interval=poll_interval)  # fmt: skip
    try:
        async with (
            serving(app, "127.0.0.1", 0) as url,
            aiohttp.ClientSession(url, headers={"Origin": url}) as http,
        ):
            yield Site(agent, app, http, url)
    finally:
        await agent.stop()
        await ledger.close()
