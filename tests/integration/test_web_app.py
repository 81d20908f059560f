"""The web app on a real loopback server, over a real SQLite ledger and a running agent (with
stand-in stager and deployer): permalink pages, their live progress, the monitor's JSON."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.domain.models import Deployment, Instance, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.fakes import FakeDeployer, make_agent, wait_for_phase
from tests.web_support import TableStarter, Task, sse

TRAIN = "user.jdoe.mnist-train/"  # PanDA task names often end in "/"
TRAIN_PATH = "/t/user.jdoe.mnist-train%2F/mlflow"
TASKS = {
    TRAIN: Task("4242", source="file:///outputs/4242"),
    "user.jdoe.running": Task("4243", status="running", source="file:///outputs/4243"),
    "user.jdoe.empty": Task("4244"),
    "user.jdoe.no-mlflow": Task("4245", source="bad:plain-logs"),
    "<script>alert(1)</script>": Task("4246", status="broken"),
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCE_KEYS = {"tool", "phase", "url", "expires_at", "reason", "name", "created_at",
                 "updated_at", "attempt", "permalink"}  # fmt: skip


class GatedDeployer(FakeDeployer):
    """Holds chosen UIs in ``starting`` until the test opens the gate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gated: set[str] = set()
        self.gate = asyncio.Event()

    async def wait_started(self, instance: Instance, deployment: Deployment, timeout: float
                           ) -> None:  # fmt: skip
        if instance.task_id in self.gated:
            await self.gate.wait()
        await super().wait_started(instance, deployment, timeout)


@dataclass
class Env:
    agent: Agent
    deployer: GatedDeployer
    starter: TableStarter
    http: aiohttp.ClientSession
    url: str


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    deployer = GatedDeployer(tmp_path / "uis")
    agent = make_agent(ledger, deployer)
    await agent.start()
    starter = TableStarter(agent, TASKS)
    app = make_app(agent, Settings(state_dir=tmp_path), starter, poll_interval=0.05)
    try:
        async with (
            serving(app, "127.0.0.1", 0) as url,
            aiohttp.ClientSession(url, headers={"Origin": url}) as http,
        ):
            yield Env(agent, deployer, starter, http, url)
    finally:
        await agent.stop()
        await ledger.close()


async def until(env: Env, task_id: str, phases: set[Phase]) -> Instance:
    queue = env.agent.events.subscribe()
    try:
        current = await env.agent.ledger.get(VisRequest(task_id).key)
        if current is not None and current.phase in phases:
            return current
        async with asyncio.timeout(30):  # a hang guard, not a timing assertion
            return await wait_for_phase(env.agent, queue, task_id, phases)
    finally:
        env.agent.events.unsubscribe(queue)


async def sse_states(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The ``state`` events of a Server-Sent Events response, decoded."""
    async for _, state in sse(resp, "state"):
        yield state


def step_states(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-phase="(\w+)" data-state="(\w+)"', html))


# --- the permalink page ------------------------------------------------------------------------


async def test_get_starts_nothing_and_offers_start(env: Env) -> None:
    async with env.http.get(TRAIN_PATH + "?ttl=2h") as resp:
        assert resp.status == 200
        html = await resp.text()
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "Not started yet" in html and "user.jdoe.mnist-train/" in html
    assert f'action="{TRAIN_PATH}/start"' in html and "data-autostart" in html
    assert '<input type="hidden" name="ttl" value="2h">' in html
    assert await env.agent.ledger.list() == [] and env.starter.asked == []


async def test_start_progress_ready_redirect_and_expiry(env: Env) -> None:
    env.deployer.gated.add("4242")
    async with env.http.post(TRAIN_PATH + "/start", data={"ttl": "2h"},
                             allow_redirects=False) as resp:  # fmt: skip
        assert resp.status == 303
        assert resp.headers["Location"] == TRAIN_PATH + "?ttl=2h"
    (inst,) = await env.agent.ledger.find(task_name=TRAIN)
    assert (inst.task_id, inst.origin, inst.ttl) == ("4242", "permalink", timedelta(hours=2))

    async with env.http.get(TRAIN_PATH + "/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        seen = []
        async with asyncio.timeout(30):
            async for state in sse_states(stream):
                seen.append(state["phase"])
                if state["phase"] == "starting":
                    steps = step_states(state["html"])
                    assert steps == {"requested": "done", "resolving": "done", "staging": "done",
                                     "deploying": "done", "starting": "current",
                                     "ready": "pending"}  # fmt: skip
                    env.deployer.gate.set()
                if state["phase"] == "ready":
                    assert state["url"] == f"http://ui.example{inst.prefix}/"
                    assert set(step_states(state["html"]).values()) == {"done"}
                    break
    assert seen[-2:] == ["starting", "ready"]

    async with env.http.get(TRAIN_PATH, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == f"http://ui.example{inst.prefix}/"
    async with env.http.get(TRAIN_PATH + "?stay=1") as resp:
        html = await resp.text()
    ready = await env.agent.ledger.get(inst.key)
    assert ready is not None and ready.expires_at is not None
    assert "The MLflow UI is live" in html
    assert f"Live until {ready.expires_at:%Y-%m-%d %H:%M:%S} UTC (in 1 h 59 min)" in html

    # Asking again (another click, another person) changes nothing.
    async with env.http.post(TRAIN_PATH + "/start", allow_redirects=False) as resp:
        assert resp.status == 303
    assert await env.agent.ledger.list() == [ready]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/t/user.jdoe.nothing/mlflow", 404, "PanDA has no task named 'user.jdoe.nothing'"),
        ("/t/user.jdoe.running/mlflow", 409,
         "task 4243 is running: its visualization starts once it has finished"),
        ("/t/user.jdoe.empty/mlflow", 409, "task 4244 has no outputs to visualize"),
        (TRAIN_PATH, 409, "cannot read duration 'soon': write it like 24h, 90m, 1h30m or 60s"),
    ],
)  # fmt: skip
async def test_refused_starts_show_the_reason_and_make_no_record(
    env: Env, path: str, status: int, reason: str
) -> None:
    form = {"ttl": "soon"} if path == TRAIN_PATH else {}
    async with env.http.post(path + "/start", data=form) as resp:
        assert resp.status == status
        html = await resp.text()
    assert "Cannot start a visualization" in html
    assert reason.replace("'", "&#39;") in html
    assert "Try again" in html and "data-autostart" not in html  # a refusal never loops
    assert await env.agent.ledger.list() == []
    name = path.split("/")[2].replace("%2F", "/")
    async with env.http.get(f"/api/v1/tasks/by-name/{name}") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": reason}


async def test_outputs_without_mlflow_data_fail_with_a_reason_and_offer_relaunch(env: Env) -> None:
    async with env.http.post("/t/user.jdoe.no-mlflow/mlflow/start") as resp:
        assert resp.status == 200  # followed the redirect to the permalink page
    failed = await until(env, "4245", {Phase.FAILED})
    assert failed.reason == "no MLflow data in bad:plain-logs"
    assert env.deployer.deploys == []  # no UI was started
    async with env.http.get("/t/user.jdoe.no-mlflow/mlflow") as resp:
        html = await resp.text()
    assert "The visualization failed" in html and "no MLflow data in bad:plain-logs" in html
    assert 'id="relaunch"' in html
    assert step_states(html)["staging"] == "failed"
    async with env.http.get("/api/v1/tasks/4245") as resp:
        (entry,) = (await resp.json())["instances"]
    assert (entry["phase"], entry["reason"]) == ("failed", "no MLflow data in bad:plain-logs")


async def test_relaunch_of_an_expired_ui_brings_it_back(env: Env) -> None:
    await env.http.post(TRAIN_PATH + "/start")
    first = await until(env, "4242", {Phase.READY})
    await env.agent.teardown(first.key)
    await until(env, "4242", {Phase.EXPIRED})
    async with env.http.get(TRAIN_PATH) as resp:
        html = await resp.text()
    assert "This visualization has ended" in html and 'id="relaunch"' in html
    assert "It was live until" in html

    async with env.http.post(TRAIN_PATH + "/relaunch", allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (303, TRAIN_PATH)
    again = await until(env, "4242", {Phase.READY})
    assert again.attempt == 2 and env.deployer.deploys == [first.name, first.name]
    # A second press (another tab) while it runs changes nothing.
    async with env.http.post(TRAIN_PATH + "/relaunch", allow_redirects=False) as resp:
        assert resp.status == 303
    assert (await env.agent.ledger.get(first.key)).attempt == 2  # type: ignore[union-attr]


async def test_a_record_made_without_the_name_is_found_after_a_start(env: Env) -> None:
    """PanDA's task_status message may have started the UI before anyone clicked."""
    await env.agent.submit(VisRequest("4242", source="file:///outputs/4242"))
    async with env.http.post(TRAIN_PATH + "/start", allow_redirects=False) as resp:
        assert resp.status == 303
    (inst,) = await env.agent.ledger.find(task_name=TRAIN)
    assert inst.task_id == "4242" and len(await env.agent.ledger.list()) == 1
    ready = await until(env, "4242", {Phase.READY})
    assert ready.task_name == TRAIN and env.deployer.deploys == [ready.name]


async def test_posts_from_other_sites_are_refused(env: Env) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Origin": ""},
                    {"Referer": "https://evil.example/page"}):  # fmt: skip
        async with (
            aiohttp.ClientSession(env.url, headers=headers) as http,
            http.post(TRAIN_PATH + "/start") as resp,
        ):
            assert resp.status == 403
            assert "cross-site request refused" in await resp.text()
    assert env.starter.asked == [] and await env.agent.ledger.list() == []


async def test_names_are_escaped_in_pages(env: Env) -> None:
    async with env.http.post("/t/%3Cscript%3Ealert(1)%3C%2Fscript%3E/mlflow/start") as resp:
        html = await resp.text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_progress_made_by_another_process_reaches_the_stream(env: Env, tmp_path: Path
                                                                   ) -> None:  # fmt: skip
    """``idds-vis web`` alone: the agent is another process and its events never reach this
    one; the stream re-reads the ledger."""
    other = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await other.open()
    await env.agent.stop()  # no worker here takes the request: the 'other process' drives it
    # A stopped worker's claim already queued on the ledger's writing thread still runs
    # (ledger/runner.py); one more write on that thread lets it finish before the submit (in a
    # loaded full run it claimed the request after it: 'resolving' instead of 'requested').
    assert await env.agent.ledger.claim(env.agent.clock.now(), "drain") is None
    try:
        req = VisRequest("77", source="s", task_name="user.x.other")
        inst, _ = await other.submit(req, env.agent.clock.now())
        async with env.http.get("/t/user.x.other/mlflow/events") as stream:
            async with asyncio.timeout(30):
                states = sse_states(stream)
                assert (await anext(states))["phase"] == "requested"
                await other.transition(inst.key, Phase.EXPIRING, env.agent.clock.now())
                assert (await anext(states))["phase"] == "expiring"
    finally:
        await other.close()


# --- the monitor's JSON, the snippet and the rest --------------------------------------------


async def test_json_by_id_and_by_name(env: Env) -> None:
    await env.http.post(TRAIN_PATH + "/start", data={"ttl": "2h"})
    ready = await until(env, "4242", {Phase.READY})
    async with env.http.get("/api/v1/tasks/4242") as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = await resp.json()
    async with env.http.get("/api/v1/tasks/by-name/user.jdoe.mnist-train%2F") as resp:
        assert await resp.json() == body
    assert (body["task_id"], body["task_name"]) == ("4242", TRAIN)
    (entry,) = body["instances"]
    assert set(entry) == INSTANCE_KEYS
    assert entry["phase"] == "ready" and entry["url"] == ready.url
    assert entry["expires_at"] == ready.expires_at.isoformat()  # type: ignore[union-attr]
    assert entry["permalink"] == env.url + TRAIN_PATH
    async with env.http.get("/api/v1/tasks/999") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "no visualization has been asked for task 999"}


async def test_snippet_robots_and_static_files(env: Env) -> None:
    async with env.http.get("/embed.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert "/api/v1/tasks/" in await resp.text()
    async with env.http.get("/static/permalink.js") as resp:
        assert resp.status == 200 and "EventSource" in await resp.text()
    async with env.http.get("/robots.txt") as resp:
        assert "Disallow: /t/" in await resp.text()


# --- the commands ----------------------------------------------------------------------------


async def read_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    async with asyncio.timeout(120):
        while line := (await proc.stderr.readline()).decode():
            if found := re.search(r"web app on (http://\S+)", line):
                return found.group(1)
    raise AssertionError("the command never said where it serves")


@pytest.mark.parametrize("command", ["web", "agent"])
async def test_the_commands_serve_the_app_over_the_ledger(tmp_path: Path, command: str) -> None:
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text("web_port: 0\nweb_host: 127.0.0.1\n")
    cli = [sys.executable, "-m", "idds_vis", "--config", str(config), "--state-dir", str(state)]
    ledger = SqlLedger(Settings(state_dir=state).db_url)
    await ledger.open()
    try:  # a record another intake made, already over: the agent leaves it alone
        inst, _ = await ledger.submit(VisRequest("31", source="s", task_name="t.31"), NOW)
        await ledger.transition(inst.key, Phase.FAILED, NOW, reason="no MLflow data in s")
    finally:
        await ledger.close()
    proc = await asyncio.create_subprocess_exec(
        *cli, command, stderr=asyncio.subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"}
    )
    try:
        url = await read_url(proc)
        async with aiohttp.ClientSession(url) as http:
            async with http.get("/api/v1/tasks/31") as resp:
                assert resp.status == 200
                (entry,) = (await resp.json())["instances"]
            async with http.post("/t/user.x.y/mlflow/start", headers={"Origin": url}) as resp:
                assert resp.status == 409  # no PanDA lookup configured: refused with the reason
                assert "cannot look task" in await resp.text()
        assert (entry["phase"], entry["reason"]) == ("failed", "no MLflow data in s")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
