"""The PanDA adapter against a real panda-server (PyPI) on PostgreSQL, with real OIDC tokens.

An author submits task parameters carrying the visualization permalink through the real
panda-client; JEDI's part is emulated with the rows it writes for a finished task; the agent's
adapter (``PandaClientTasks``) then reads the task, its outputs and its files from the server.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from idds_vis.agent.resolver import TaskResolver
from idds_vis.domain.errors import SourceUnreachable
from idds_vis.domain.messages import Trigger, parse_message
from idds_vis.lookup import PandaClientTasks, PandaSettings
from idds_vis.panda import with_visualization
from tests.panda_server import (
    AGENT,
    AUTHOR,
    USERS,
    PandaServer,
    admin_execute,
    running_panda_server,
)

pytestmark = pytest.mark.postgres

VIS_BASE = "https://vis.example"


def task_params(name: str) -> dict[str, Any]:
    """A user task's parameters as an author's script writes them, with the permalink added."""
    params = {
        "taskName": name,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "taskType": "anal",
        "transPath": "https://example.org/train.sh",
        "architecture": "x86_64-el9",
    }
    return with_visualization(params, tool="mlflow", ttl="24h", base_url=VIS_BASE)


def new_name() -> str:
    return f"user.{AUTHOR}.train-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def agent(panda_server: PandaServer) -> PandaClientTasks:
    """The adapter as the agent runs it: its own identity, not the author's."""
    return PandaClientTasks(panda_server.settings(AGENT))


async def test_a_finished_task_is_read_back_with_its_visualization_entry_and_outputs(
    panda_server: PandaServer, agent: PandaClientTasks
) -> None:
    name = new_name()
    params = task_params(name)
    assert params["visualization"] == f"{VIS_BASE}/t/{name}/mlflow?ttl=24h"
    assert params["pushStatusChanges"] is True
    task_id = await panda_server.submit_task(params)

    submitted = await agent.task(task_id, details=True)
    assert submitted is not None
    assert submitted.params["visualization"] == params["visualization"]
    assert submitted.status is None  # JEDI has not taken it yet
    assert submitted.output_containers == ()

    outputs = [f"{name}_metrics.tgz/", f"{name}_model/"]
    logs = [f"{name}.log/"]
    files = await panda_server.finish_task(task_id, outputs=outputs, logs=logs, files_per_dataset=2)

    plain = await agent.task(task_id)
    assert plain is not None
    assert plain.task_id == task_id
    assert plain.task_name == name
    assert plain.params["visualization"] == f"{VIS_BASE}/t/{name}/mlflow?ttl=24h"
    assert plain.params["pushStatusChanges"] is True
    assert plain.status is None and plain.output_containers == ()  # no details asked

    task = await agent.task(task_id, details=True)
    assert task is not None
    assert task.status == "done"
    assert task.user_name == USERS[AUTHOR]  # the server's name for the author's token
    assert task.params["userName"] == USERS[AUTHOR]
    assert task.output_containers == (*outputs, *logs)  # trailing "/" kept as the server sent

    assert await agent.task_id_by_name(name, user_name=USERS[AUTHOR]) == task_id

    listed = await agent.output_files(task_id)
    assert len(listed) == 6
    assert {(f["dataset"], f["lfn"], f["scope"], f["id"]) for f in listed} == {
        (f.dataset, f.lfn, f.scope, f.file_id) for f in files
    }
    assert {f["scope"] for f in listed} == {f"user.{AUTHOR}"}
    assert {f["status"] for f in listed} == {"finished"}


async def test_a_task_status_message_resolves_to_a_request_through_the_server(
    panda_server: PandaServer, agent: PandaClientTasks
) -> None:
    name = new_name()
    task_id = await panda_server.submit_task(task_params(name))
    await panda_server.finish_task(task_id, outputs=[f"{name}_metrics.tgz/"])
    body = {"msg_type": "task_status", "taskid": task_id, "status": "done",
            "timestamp": int(time.time())}  # fmt: skip
    trigger = parse_message({}, json.dumps(body).encode())
    assert isinstance(trigger, Trigger)

    request = await TaskResolver(panda=agent)(trigger)

    assert request is not None
    assert request.task_id == str(task_id)
    assert request.task_name == name
    assert request.tool == "mlflow"
    assert request.ttl == timedelta(hours=24)
    assert request.requested_by == USERS[AUTHOR]


async def test_the_newest_task_of_a_name_is_found(
    panda_server: PandaServer, agent: PandaClientTasks
) -> None:
    name = new_name()
    first = await panda_server.submit_task(task_params(name))
    await panda_server.finish_task(first, status="failed")
    second = await panda_server.submit_task(task_params(name))  # the author tried again
    await panda_server.finish_task(second)
    assert second > first

    assert await agent.task_id_by_name(name, user_name=USERS[AUTHOR]) == second
    assert await agent.task_id_by_name(f"{name}-other", user_name=USERS[AUTHOR]) is None


async def test_without_a_user_name_the_server_searches_only_the_callers_tasks(
    panda_server: PandaServer, agent: PandaClientTasks
) -> None:
    name = new_name()
    task_id = await panda_server.submit_task(task_params(name))
    await panda_server.finish_task(task_id)

    assert await agent.task_id_by_name(name) is None  # the agent owns no task
    author = PandaClientTasks(panda_server.settings(AUTHOR))
    assert await author.task_id_by_name(name) == task_id


async def test_an_unknown_task_is_none(agent: PandaClientTasks) -> None:
    unknown = 987_654_321
    assert await agent.task(unknown) is None
    assert await agent.task(unknown, details=True) is None
    assert await agent.output_files(unknown) == []


@pytest.fixture
def lone_server(pg_server: str) -> Iterator[PandaServer]:
    """A panda-server of its own (own database too), for the tests that break it."""
    with running_panda_server(pg_server) as server:
        yield server


async def test_outages_are_unreachable_never_unknown(
    lone_server: PandaServer, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = new_name()
    task_id = await lone_server.submit_task(task_params(name))
    await lone_server.finish_task(task_id, outputs=[f"{name}_metrics.tgz/"])
    settings = lone_server.settings(AGENT)
    token = settings.token_file.read_text() if settings.token_file else ""
    assert token
    adapter = PandaClientTasks(settings)
    assert (await adapter.task(task_id)) is not None
    caplog.set_level(logging.DEBUG)

    # PanDA's database goes away: the server answers "Task not found" for the task
    # parameters then, which must not be taken for an unknown task (the message would be
    # dropped instead of retried).
    database = lone_server.db_url.database
    await admin_execute(pg_server, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    await admin_execute(
        pg_server,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
    )
    try:
        # (Each call takes panda-server some seconds of reconnecting before it answers.)
        calls = {
            "Database exception while gathering files": adapter.task(987_654_321),
            "Failed to retrieve task IDs": adapter.task_id_by_name(name, USERS[AUTHOR]),
        }
        for reason, call in calls.items():
            with pytest.raises(SourceUnreachable) as raised:
                await call
            assert str(raised.value).startswith(f"PanDA server http://127.0.0.1:{lone_server.port}")
            assert reason in str(raised.value)
    finally:
        await admin_execute(pg_server, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    # The server itself is stopped.
    lone_server.stop()
    assert not lone_server.running
    for call in (adapter.task(task_id), adapter.task_id_by_name(name), adapter.output_files(1)):
        with pytest.raises(SourceUnreachable) as raised:
            await call
        message = str(raised.value)
        assert f"http://127.0.0.1:{lone_server.port}" in message
        assert "Connection refused" in message
        assert token not in message
    assert token not in caplog.text


async def test_a_token_the_server_refuses_is_reported_without_the_token(
    panda_server: PandaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Well formed, but signed by a key the server's identity provider never published.
    panda_server.idp.key, real_key = rsa.generate_private_key(65537, 2048), panda_server.idp.key
    try:
        forged = panda_server.idp.token(AGENT, USERS[AGENT])
    finally:
        panda_server.idp.key = real_key
    token_file = tmp_path / "token"
    token_file.write_text(forged)
    adapter = PandaClientTasks(panda_server.settings(AGENT, token_file=token_file))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SourceUnreachable) as raised:
        await adapter.task(1)

    message = str(raised.value)
    assert message.startswith(f"PanDA server http://127.0.0.1:{panda_server.port}: ")
    assert "HTTP 403" in message and "Token authentication failed" in message
    assert forged not in message
    assert forged not in caplog.text


async def test_a_missing_token_file_is_reported_by_path_not_content(
    panda_server: PandaServer, tmp_path: Path
) -> None:
    adapter = PandaClientTasks(panda_server.settings(AGENT, token_file=tmp_path / "no-such-token"))
    with pytest.raises(SourceUnreachable, match="cannot read the credentials"):
        await adapter.task(1)


async def test_a_server_that_does_not_answer_is_given_up_after_the_timeout(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-real-token")
    # A port that accepts connections (the kernel's backlog) and never answers. Closing it at
    # the end resets the connection panda-client is still waiting on (its own timeout is
    # 600 s), so its worker thread ends with the test.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = int(listener.getsockname()[1])
        settings = PandaSettings(
            url=f"http://127.0.0.1:{port}", token_file=token_file, vo="atlas", timeout=0.5
        )
        with pytest.raises(SourceUnreachable, match=r"no answer within 0\.5 s") as raised:
            await PandaClientTasks(settings).task(1)
    assert f"http://127.0.0.1:{port}" in str(raised.value)
