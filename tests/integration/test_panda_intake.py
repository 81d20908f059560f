"""A PanDA task_status message starts a UI only for a task that declared a visualization.

Real parts: panda-server 1.0.x on PostgreSQL (tests/panda_server.py), tasks submitted by the
author with the real panda-client, ActiveMQ, an ``idds-vis agent`` process reading the task
parameters with panda-client, a real MLflow UI, and an HTTP server standing in for BigPanDA's
``/idds/downloadhpometrics/?workloadid=N`` (the artefact source of the original feature).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from idds_vis.panda import with_visualization
from tests.activemq import BrokerAddress
from tests.agent_process import running_agent
from tests.integration.test_agent_stomp import listed, publish
from tests.message_fixtures import fixture_body
from tests.panda_server import AGENT, AUTHOR, PandaServer

pytestmark = [pytest.mark.postgres, pytest.mark.mlflow]
CLI = [sys.executable, "-m", "idds_vis"]


@pytest.fixture
async def bigpanda(demo_archive: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """``/idds/downloadhpometrics/?workloadid=N``: the task's metrics tarball."""
    asked: list[str] = []

    async def download(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("workloadid", ""))
        return web.FileResponse(demo_archive)

    app = web.Application()
    app.router.add_get("/idds/downloadhpometrics/", download)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", asked
    await runner.cleanup()


def params(name: str, *, visualize: bool) -> dict[str, Any]:
    task = {"taskName": name, "userName": AUTHOR, "vo": "atlas", "prodSourceLabel": "user",
            "taskType": "anal", "transPath": "https://example.org/train.sh"}  # fmt: skip
    if not visualize:
        return task
    return with_visualization(task, ttl="1h", base_url="https://vis.example")


async def test_task_status_launches_only_declared_tasks(
    tmp_path: Path,
    activemq_broker: BrokerAddress,
    panda_server: PandaServer,
    bigpanda: tuple[str, list[str]],
) -> None:
    plain = await panda_server.submit_task(
        params(f"user.{AUTHOR}.plain.{tmp_path.name}/", visualize=False)
    )
    ml = await panda_server.submit_task(
        params(f"user.{AUTHOR}.ml.{tmp_path.name}/", visualize=True)
    )
    for task_id in (plain, ml):
        await panda_server.finish_task(task_id, outputs=[f"user.{AUTHOR}.out.{task_id}/"])

    topic = f"/topic/idds-vis.panda.{tmp_path.name}"
    base, asked = bigpanda
    settings = panda_server.settings(AGENT)
    async with running_agent(tmp_path, {
        "stomp_hosts": [f"{activemq_broker.host}:{activemq_broker.port}"],
        "stomp_subscriptions": [topic],
        "stomp_user": activemq_broker.user,
        "stomp_password": activemq_broker.password,
        "stomp_dead_letter": f"/queue/idds-vis.panda.{tmp_path.name}.DLQ",
        "stomp_relay_queue": f"/queue/idds-vis.panda.{tmp_path.name}.relay",
        "panda_url": settings.url,
        "panda_auth": "oidc",
        "panda_token_file": str(settings.token_file),
        "panda_vo": settings.vo,
        "panda_source": base + "/idds/downloadhpometrics/?workloadid={task_id}",
    }) as agent:  # fmt: skip
        state = agent.state
        # The captured JEDI message, once for each task; the plain one first, so that once the
        # ML task's UI is up the plain one has certainly been handled (one ordered stream).
        for task_id in (plain, ml):
            publish(
                activemq_broker,
                topic,
                fixture_body("panda_task_status_done.json") | {"taskid": task_id},
            )
        async with asyncio.timeout(240):  # a hang guard, not a timing assertion
            while True:
                rows = await listed(state)
                if rows and rows[0]["phase"] in ("ready", "failed"):
                    break
                agent.check_running()
                await asyncio.sleep(0.5)
        (row,) = rows  # the task without a visualization entry made no record
        assert row["phase"] == "ready", (row["reason"], agent.log_tail())
        assert row["task_id"] == str(ml) and row["ttl_seconds"] == 3600
        assert asked == [str(ml)]  # only the declared task's artefacts were fetched
        done = subprocess.run([*CLI, "--state-dir", str(state), "teardown", "--task", str(ml),
                               "--json"], capture_output=True, text=True, timeout=180)  # fmt: skip
        assert json.loads(done.stdout)["phase"] == "expired"
