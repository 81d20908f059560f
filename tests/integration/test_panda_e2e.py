"""From a real panda-server to a live UI behind the permalink, and every refusal, end to end.

Real parts: panda-server 1.0.x on PostgreSQL (tests/panda_server.py) read through panda-client,
the author's submission with ``with_visualization``, JEDI's rows for a finished task, ActiveMQ,
an ``idds-vis agent`` process with its web app, real MLflow UIs, and the task's output files on a
real HTTP server or on an S3-compatible server (moto in server mode), both on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from idds_vis.panda import with_visualization
from tests.activemq import BrokerAddress
from tests.agent_process import running_agent
from tests.integration.test_agent_stomp import listed, publish
from tests.message_fixtures import fixture_body
from tests.moto_s3 import BUCKET, S3Server, run_s3_server
from tests.panda_server import AGENT, AUTHOR, USERS, PandaServer

pytestmark = [pytest.mark.postgres, pytest.mark.mlflow]
CLI = [sys.executable, "-m", "idds_vis"]
OWNER = USERS[AUTHOR]  # the userName PanDA records for the author


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def not_mlflow_archive() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        body = b"epoch 1 loss 0.3\n"
        info = tarfile.TarInfo("output/train.log")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


@pytest.fixture
async def grid_files() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """Output files by ``<scope>/<lfn>``, as a storage element's HTTP door serves them."""
    files: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        body = files.get(f"{request.match_info['scope']}/{request.match_info['lfn']}")
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/gzip")

    app = web.Application()
    app.router.add_get("/files/{scope}/{lfn}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", files
    await runner.cleanup()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from run_s3_server(strict=False)  # listings need auth off (moto#5948, tests/moto_s3.py)


@asynccontextmanager
async def vis_agent(
    tmp_path: Path, broker: BrokerAddress, panda: PandaServer, **extra: Any
) -> AsyncIterator[tuple[str, str, Path]]:
    """An ``idds-vis agent`` reading PanDA, with its web app: (topic, web URL, state dir)."""
    topic = f"/topic/idds-vis.e2e.{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = panda.settings(AGENT)
    settings_for_agent = {
        "stomp_hosts": [f"{broker.host}:{broker.port}"],
        "stomp_subscriptions": [topic],
        "stomp_user": broker.user,
        "stomp_password": broker.password,
        "stomp_dead_letter": f"{topic.replace('/topic/', '/queue/')}.DLQ",
        "stomp_relay_queue": f"{topic.replace('/topic/', '/queue/')}.relay",
        "panda_url": settings.url,
        "panda_auth": "oidc",
        "panda_token_file": str(settings.token_file),
        "panda_vo": settings.vo,
        "web_port": port,
        **extra,
    }
    async with running_agent(tmp_path, settings_for_agent) as agent:
        yield topic, f"http://127.0.0.1:{port}", agent.state


async def submit(panda: PandaServer, name: str, web_url: str) -> int:
    params = {"taskName": name, "userName": OWNER, "vo": "atlas", "prodSourceLabel": "user",
              "taskType": "anal", "transPath": "https://example.org/train.sh"}  # fmt: skip
    return await panda.submit_task(with_visualization(params, ttl="2h", base_url=web_url))


async def wait_for_phase(state: Path, task_id: int, phases: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(240):  # a hang guard, not a timing assertion
        while True:
            rows = [r for r in await listed(state) if r["task_id"] == str(task_id)]
            if rows and rows[0]["phase"] in phases:
                return rows[0]
            await asyncio.sleep(0.5)


async def permalink_lands_on_the_ui(session: aiohttp.ClientSession, link: str, url: str) -> None:
    async with session.get(link, allow_redirects=False) as page:
        assert page.status == 302 and page.headers["Location"] == url
    async with session.get(link) as ui:  # followed: the MLflow UI itself
        assert ui.status == 200 and "<html" in (await ui.text()).lower()


async def test_task_status_to_live_ui_from_http_outputs_and_the_permalink(
    tmp_path, activemq_broker, panda_server, grid_files, demo_archive
):
    files_url, files = grid_files
    name = f"user.{AUTHOR}.mnist.{uuid.uuid4().hex[:6]}/"
    async with vis_agent(tmp_path, activemq_broker, panda_server,
                         panda_outputs_source=files_url + "/files/{scope}/{lfn}") as (
        topic, web_url, state):  # fmt: skip
        task_id = await submit(panda_server, name, web_url)
        written = await panda_server.finish_task(task_id, outputs=[name.replace(".mnist", ".out")],
                                                 logs=[name.rstrip("/") + ".log/"])  # fmt: skip
        (out,) = [f for f in written if not f.lfn.endswith(".log.tgz")]
        files[f"{out.scope}/{out.lfn}"] = demo_archive.read_bytes()
        publish(
            activemq_broker,
            topic,
            fixture_body("panda_task_status_done.json") | {"taskid": task_id},
        )
        row = await wait_for_phase(state, task_id, {"ready", "failed"})
        assert row["phase"] == "ready", row["reason"]
        assert row["source"] == f"{files_url}/files/{out.scope}/{out.lfn}"
        link = (await panda_server_params(panda_server, task_id))["visualization"]
        assert link.startswith(web_url + "/t/")
        async with aiohttp.ClientSession() as session:
            await permalink_lands_on_the_ui(session, link, row["url"])
            async with session.get(f"{web_url}/api/v1/tasks/{task_id}") as answer:
                monitor = await answer.json()
                (inst,) = monitor["instances"]
        assert (inst["phase"], inst["url"], monitor["task_name"]) == ("ready", row["url"], name)
        ended = subprocess.run([*CLI, "--state-dir", str(state), "teardown", "--task",
                                str(task_id), "--json"], capture_output=True, text=True,
                               timeout=180)  # fmt: skip
        assert json.loads(ended.stdout)["phase"] == "expired"


async def panda_server_params(panda: PandaServer, task_id: int) -> dict[str, Any]:
    from idds_vis.lookup import PandaClientTasks

    task = await PandaClientTasks(panda.settings(AGENT)).task(task_id)
    assert task is not None
    return task.params


async def test_the_permalink_starts_a_task_staged_from_s3(
    tmp_path, activemq_broker, panda_server, s3, demo_archive
):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "id").write_text(s3.access_key_id)
    (keys / "secret").write_text(s3.secret_access_key)
    name = f"user.{AUTHOR}.s3train.{uuid.uuid4().hex[:6]}/"
    async with vis_agent(
        tmp_path, activemq_broker, panda_server,
        panda_outputs_source=f"s3://{BUCKET}/{{scope}}/{{container}}/",
        s3_endpoint_url=s3.endpoint, s3_access_key_file=str(keys / "id"),
        s3_secret_key_file=str(keys / "secret"),
    ) as (_topic, web_url, state):  # fmt: skip
        task_id = await submit(panda_server, name, web_url)
        container = name.replace(".s3train", ".s3out")
        (out,) = await panda_server.finish_task(task_id, outputs=[container])
        s3.client().put_object(Bucket=BUCKET, Key=f"{out.scope}/{container.rstrip('/')}/{out.lfn}",
                               Body=demo_archive.read_bytes())  # fmt: skip
        # No task_status message here: a person opens the permalink first.
        link = (await panda_server_params(panda_server, task_id))["visualization"]
        async with aiohttp.ClientSession() as session:
            async with session.get(link) as page:  # the page; its script posts the Start form
                assert page.status == 200 and "Start" in await page.text()
            start = link.split("?")[0] + "/start"
            async with session.post(start, data={"ttl": "2h", "owner": OWNER},
                                    headers={"Origin": web_url}) as started:  # fmt: skip
                assert started.status == 200, await started.text()
            row = await wait_for_phase(state, task_id, {"ready", "failed"})
            assert row["phase"] == "ready", row["reason"]
            assert row["source"] == f"s3://{BUCKET}/{out.scope}/{container}"
            await permalink_lands_on_the_ui(session, link, row["url"])
        subprocess.run([*CLI, "--state-dir", str(state), "teardown", "--task", str(task_id)],
                       capture_output=True, timeout=180, check=True)  # fmt: skip


async def test_bad_tasks_get_a_reason_and_no_instance(
    tmp_path, activemq_broker, panda_server, grid_files
):
    files_url, files = grid_files
    tag = uuid.uuid4().hex[:6]
    async with vis_agent(tmp_path, activemq_broker, panda_server,
                         panda_outputs_source=files_url + "/files/{scope}/{lfn}") as (
        _topic, web_url, state):  # fmt: skip
        running = await submit(panda_server, f"user.{AUTHOR}.running.{tag}/", web_url)
        await panda_server.finish_task(
            running, outputs=[f"user.{AUTHOR}.runout.{tag}/"], status="running"
        )  # JEDI runs it: not finished yet
        logs_only = await submit(panda_server, f"user.{AUTHOR}.logsonly.{tag}/", web_url)
        await panda_server.finish_task(logs_only, logs=[f"user.{AUTHOR}.logsonly.{tag}.log/"])
        no_ml = await submit(panda_server, f"user.{AUTHOR}.noml.{tag}/", web_url)
        (out,) = await panda_server.finish_task(no_ml, outputs=[f"user.{AUTHOR}.nomlout.{tag}/"])
        files[f"{out.scope}/{out.lfn}"] = not_mlflow_archive()

        cases = {
            f"user.{AUTHOR}.never.{tag}/": (404, "PanDA has no task"),
            f"user.{AUTHOR}.running.{tag}/": (409, f"task {running} is "),
            f"user.{AUTHOR}.logsonly.{tag}/": (409, f"task {logs_only} has no outputs"),
        }
        async with aiohttp.ClientSession() as session:
            for name, (status, reason) in cases.items():
                link = f"{web_url}/t/{_quote(name)}/mlflow"
                async with session.post(link + "/start", data={"owner": OWNER},
                                        headers={"Origin": web_url}) as refused:  # fmt: skip
                    assert refused.status == status, (name, await refused.text())
                    assert reason in await refused.text()
                async with session.get(f"{web_url}/api/v1/tasks/by-name/{_quote(name)}") as js:
                    assert js.status == 404 and reason in (await js.json())["error"]
            assert await listed(state) == []  # no refusal made a record
            # The outputs hold no MLflow data: found out by staging them; failed, no UI.
            link = f"{web_url}/t/{_quote(f'user.{AUTHOR}.noml.{tag}/')}/mlflow"
            async with session.post(link + "/start", data={"owner": OWNER},
                                    headers={"Origin": web_url}) as started:  # fmt: skip
                assert started.status == 200
            row = await wait_for_phase(state, no_ml, {"ready", "failed"})
            assert row["phase"] == "failed" and "MLflow" in row["reason"], row
            async with session.get(link + "?stay=1") as page:
                text = await page.text()
                assert "Relaunch" in text and "MLflow" in text
            async with session.get(f"{web_url}/api/v1/tasks/{no_ml}") as js:
                (inst,) = (await js.json())["instances"]
                assert inst["phase"] == "failed" and inst["url"] is None
                assert inst["reason"] == row["reason"]


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
