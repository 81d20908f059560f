"""`idds-vis agent` configured with a broker: a vis_request message becomes a live UI."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stomp

from tests.activemq import BrokerAddress
from tests.agent_process import CLI, running_agent

pytestmark = pytest.mark.mlflow


def publish(broker: BrokerAddress, destination: str, body: dict[str, object]) -> None:
    conn = stomp.Connection12([(broker.host, broker.port)])
    conn.connect(broker.user, broker.password, wait=True)
    try:
        conn.send(destination, json.dumps(body), headers={"persistent": "true"})
    finally:
        conn.disconnect()  # waits for the broker's receipt of the DISCONNECT: the SEND is stored


async def listed(state: Path) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--state-dir", str(state), "list", "--json", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    result: list[dict[str, object]] = json.loads(out)
    return result


@pytest.fixture
def archive_url(demo_archive: Path) -> Iterator[str]:
    """The demo archive over http from loopback: a message may not name a local path."""
    handler = functools.partial(QuietHandler, directory=str(demo_archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{demo_archive.name}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


async def test_a_vis_request_message_drives_the_agent_to_a_live_ui(
    tmp_path: Path, activemq_broker: BrokerAddress, archive_url: str
) -> None:
    topic = "/topic/idds-vis.test.requests"
    # The agent says it runs once the intake has subscribed; a topic keeps nothing before.
    async with running_agent(tmp_path, {
        "stomp_hosts": [f"{activemq_broker.host}:{activemq_broker.port}"],
        "stomp_subscriptions": [topic],
        "stomp_user": activemq_broker.user,
        "stomp_password": activemq_broker.password,
        "stomp_relay_queue": f"/queue/idds-vis.test.relay.{tmp_path.name}",
        # The artefact server is on loopback, which message sources may not reach unless listed.
        "allow_private_addresses": ["127.0.0.1/32"],
    }) as agent:  # fmt: skip
        # A PanDA "done" first: with no PanDA server configured nothing can tell whether the task
        # wants a UI, so it goes to the dead-letter queue with that reason and makes no record.
        publish(activemq_broker, topic, {"msg_type": "task_status", "taskid": 7, "status": "done",
                                         "timestamp": 1795297866})  # fmt: skip
        publish(activemq_broker, topic, {"msg_type": "vis_request", "task_id": "stomp-42",
                                         "tool": "mlflow", "source": archive_url,
                                         "ttl": "1h"})  # fmt: skip
        state = agent.state
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            while True:
                rows = await listed(state)
                if rows and rows[0]["phase"] in ("ready", "failed"):
                    break
                agent.check_running()
                await asyncio.sleep(0.5)
        (row,) = rows  # one record: the PanDA message was dead-lettered, not failed
        assert row["phase"] == "ready", (row["reason"], agent.log_tail())
        assert row["task_id"] == "stomp-42" and row["ttl_seconds"] == 3600
        done = subprocess.run([*CLI, "--state-dir", str(state), "teardown", "--task", "stomp-42",
                               "--json"], capture_output=True, text=True, timeout=180)  # fmt: skip
        assert json.loads(done.stdout)["phase"] == "expired"
