"""What the catalog tests share: a table of PanDA tasks in place of PanDA, and the web app with
login on, served on loopback next to a running agent (stand-in stager and deployer) and a real
local OIDC issuer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.api.catalog.tasks import CatalogTask
from idds_vis.domain.errors import InvalidRequest, NotFound
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.fakes import FakeDeployer, make_agent
from tests.oidc_issuer import AUDIENCE, CLIENT_ID, CLIENT_SECRET, ROBOT_ID, Issuer
from tests.web_support import TableStarter, Task

JANE, JOHN = "Jane Doe", "John Smith"
# Tasks as PanDA would describe them: id -> (name, owner, where the outputs are)
TASKS = {
    "4242": CatalogTask("4242", "user.jdoe.mnist/", JANE, "file:///outputs/4242"),
    "4243": CatalogTask("4243", "user.jdoe.cnn/", JANE, "file:///outputs/4243"),
    "4244": CatalogTask("4244", "user.jdoe.rnn/", JANE, "file:///outputs/4244"),
    "5151": CatalogTask("5151", "user.jsmith.gan/", JOHN, "file:///outputs/5151"),
    "5152": CatalogTask("5152", "user.jsmith.vae/", JOHN, "file:///outputs/5152"),
}
RUNNING = {"6000": "user.jdoe.still-running/"}


class TableDirectory:
    """The catalog's ``TaskDirectory`` with a table in place of PanDA: the same refusals."""

    def __init__(self, tasks: dict[str, CatalogTask]) -> None:
        self.tasks = tasks

    async def task(self, task_id: str) -> CatalogTask:
        if task_id in RUNNING:
            raise InvalidRequest(f"task {task_id} is running: its results can be shown once "
                                 "it has finished")  # fmt: skip
        if task_id not in self.tasks:
            raise NotFound(f"PanDA has no task {task_id}")
        return self.tasks[task_id]

    async def by_name(self, task_name: str, owner: str | None = None) -> CatalogTask:
        for task in self.tasks.values():
            if task.task_name == task_name:
                return task
        raise NotFound(f"PanDA has no task named {task_name!r}")


def settings_for(tmp_path: Path, issuer: Issuer, **changes: Any) -> Settings:
    secret = tmp_path / "client.secret"
    secret.write_text(CLIENT_SECRET + "\n")
    key = tmp_path / "session.key"
    key.write_text(Fernet.generate_key().decode())
    base: dict[str, Any] = {
        "state_dir": tmp_path,
        "oidc_issuer": issuer.url,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_file": str(secret),
        "oidc_audience": [AUDIENCE],
        "oidc_robot_clients": [ROBOT_ID],
        "production_groups": ["atlas/production"],
        "session_key_file": str(key),
        "tool_groups": {"mlflow": ["atlas/ml-support"]},
        "tool_default_ttl": {"mlflow": timedelta(hours=2)},
        "tool_max_ttl": {"mlflow": timedelta(days=2)},
        "rate_limit": "1000/minute",
    }
    base.update(changes)
    return Settings(**base)


@dataclass
class Site:
    agent: Agent
    deployer: FakeDeployer
    issuer: Issuer
    url: str
    http: aiohttp.ClientSession

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def as_user(self, name: str, groups: list[str] | None = None, **claims: Any) -> dict[str, str]:
        sub = name.lower().replace(" ", "-")
        return self.bearer(self.issuer.token(sub=sub, name=name, preferred_username=sub,
                                             groups=groups or ["atlas"], **claims))  # fmt: skip

    async def until(self, task_id: str, phases: set[Phase]) -> Instance:
        """The record once it reaches one of ``phases`` (the agent's events, then the ledger)."""
        queue = self.agent.events.subscribe()
        try:
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                while True:
                    inst = await self.agent.ledger.get(InstanceKey(task_id))
                    if inst is not None and inst.phase in phases:
                        return inst
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await queue.get()
        finally:
            self.agent.events.unsubscribe(queue)


@contextlib.asynccontextmanager
async def site(tmp_path: Path, issuer: Issuer, *, ledger_url: str | None = None,
               poll_interval: float = 0.05, **changes: Any) -> AsyncIterator[Site]:  # fmt: skip
    """The web app and an agent; several sites on one ledger URL are like agent replicas."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = settings_for(tmp_path, issuer, **changes)
    ledger = SqlLedger(ledger_url or f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    deployer = FakeDeployer(tmp_path / "uis")
    agent = make_agent(ledger, deployer)
    await agent.start()
    permalink_tasks = {t.task_name or "": Task(t.task_id, source=t.source)
                       for t in TASKS.values()}  # fmt: skip
    app = make_app(agent, settings, TableStarter(agent, permalink_tasks),
                   poll_interval=poll_interval, directory=TableDirectory(TASKS))  # fmt: skip
    try:
        async with serving(app, "127.0.0.1", 0) as url, aiohttp.ClientSession(url) as http:
            yield Site(agent, deployer, issuer, url, http)
    finally:
        await agent.stop()
        await ledger.close()
