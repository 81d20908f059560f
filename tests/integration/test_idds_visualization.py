"""On a real iDDS: train -> VisualizationWork -> TeardownWork drives a real idds-vis agent.

The workflow is submitted with the real ClientManager. The training stand-in
(tests/idds_works/standin.py ``ArtefactTrain``) packs a real MLflow training's output into a
tarball, served by a real HTTP server, and publishes where it is. The VisualizationWork (run
by the iDDS agents, which import ``idds_vis.idds``) sends its request over ActiveMQ to an
``idds-vis agent`` process, polls the agent's JSON and finishes once the UI answers, with the
URL in its transform's output_data. The TeardownWork then ends the UI at its expiry and
finishes once it is gone. The iDDS ``work_processing`` message about the training reaches the
same agent through the iDDS topic; it is resolved through the iDDS REST API to the same key,
so there is one instance, not two.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.activemq import BrokerAddress
from tests.idds_server import IddsServer
from tests.integration.conftest import ui_processes
from tests.integration.test_idds_smoke import succeeded, wait_for_request

pytestmark = [pytest.mark.postgres, pytest.mark.mlflow]
CLI = [sys.executable, "-m", "idds_vis"]
# Hang guards, not timing assertions: iDDS scans its database every 10 s and holds messages
# for 60 s; a UI takes ~10 s to start on this machine.
DEADLINE = 420.0
TTL_SECONDS = 90


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def artefact_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    published = tmp_path / "published"
    published.mkdir()
    handler = functools.partial(QuietHandler, directory=str(published))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield published, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def vis_agent(
    tmp_path: Path, idds_server: IddsServer, activemq_broker: BrokerAddress
) -> Iterator[tuple[subprocess.Popen[str], Path, str]]:
    """``idds-vis agent`` consuming the works' queue and the iDDS topic, serving its web app
    where the iDDS agents' works look for it."""
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state),
        "stomp_hosts": [f"{activemq_broker.host}:{activemq_broker.port}"],
        "stomp_subscriptions": [idds_server.vis_destination, idds_server.topic],
        "stomp_user": activemq_broker.user,
        "stomp_password": activemq_broker.password,
        "stomp_dead_letter": f"{idds_server.vis_destination}.DLQ",
        "stomp_relay_queue": f"{idds_server.vis_destination}.relay.{tmp_path.name}",
        "web_port": idds_server.vis_api_port,
        "idds_host": idds_server.rest_url,
        "idds_x509_proxy": idds_server.client_env["X509_USER_PROXY"],
        # The works' artefact server is on loopback: message sources reach it only if listed.
        "allow_private_addresses": ["127.0.0.1/32"],
    }))  # fmt: skip
    log = tmp_path / "agent.log"
    agent = subprocess.Popen([*CLI, "--config", str(config), "agent"], stdout=subprocess.DEVNULL,
                             stderr=log.open("w"), text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "agent running" not in log.read_text():
            assert agent.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)  # another process's output; nothing to wait on instead
        yield agent, log, f"http://127.0.0.1:{idds_server.vis_api_port}"
    finally:
        agent.terminate()
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def wait_until(what: str, check: Any, context: Any) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {DEADLINE:.0f} s\n{context()}")
        time.sleep(1.0)  # polling other processes' state; nothing to wait on instead


def test_visualization_and_teardown_works_on_real_idds(
    idds_server: IddsServer,
    demo_archive: Path,
    artefact_server: tuple[Path, str],
    vis_agent: tuple[subprocess.Popen[str], Path, str],
) -> None:
    from idds.common.constants import TransformStatus
    from idds.workflowv2.workflow import Workflow

    from idds_vis.idds import add_visualization
    from tests.idds_works.standin import ArtefactTrain

    published, url = artefact_server
    agent, agent_log, api = vis_agent
    job_dir = demo_archive.parent / "job"  # the real training's output (mlflow.db + artefacts)
    train = ArtefactTrain(job_dir=str(job_dir), publish_dir=str(published), publish_url=url)
    workflow = Workflow(name=f"idds-vis-train-visualize-{train.internal_id[:8]}")
    workflow.add_work(train)
    add_visualization(workflow, train, ttl=f"{TTL_SECONDS}s")
    # The stand-in's workload id (what iDDS sets as the VisualizationWork's parent).
    task_id = str(zlib.crc32(train.internal_id.encode()) & 0x7FFFFFFF)

    def context() -> str:
        return f"agent log:\n{agent_log.read_text()[-4000:]}\n{idds_server.log_tail(30)}"

    client = idds_server.client()
    request_id = succeeded(client.submit(workflow))

    def instance() -> dict[str, Any] | None:
        idds_server.check_running()
        assert agent.poll() is None, context()
        answer = get_json(f"{api}/api/v1/tasks/{task_id}")
        return answer["instances"][0] if answer and answer["instances"] else None

    ready = wait_until(
        "a ready UI", lambda: (i := instance()) and i["phase"] == "ready" and i, context
    )
    with urllib.request.urlopen(ready["url"], timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read(2048).lower()
    name = ready["name"]
    assert name in ui_processes().values()

    # The VisualizationWork finished with the URL in its transform's output_data.
    client.setup_client()

    def transforms() -> dict[str, Any]:
        found = succeeded(client.client.get_transforms(request_id=request_id))
        return {type(tf["transform_metadata"]["work"]).__name__: tf for tf in found}

    def vis_done() -> dict[str, Any] | None:
        tf = transforms().get("VisualizationWork")
        return tf if tf and tf["status"] == TransformStatus.Finished else None

    vis_tf = wait_until("the VisualizationWork finished", vis_done, context)
    output = vis_tf["transform_metadata"]["work"].output_data
    assert output["vis_url"] == ready["url"] and output["vis_task_id"] == task_id
    assert output["vis_phase"] == "ready"

    # The TeardownWork ends the UI at its expiry and finishes once it is gone; the request
    # then finishes.
    assert wait_for_request(idds_server, request_id) == "Finished", context()
    ended = instance()
    assert ended is not None and ended["phase"] == "expired", ended
    assert name not in ui_processes().values()
    torn = transforms()["TeardownWork"]
    assert torn["status"] == TransformStatus.Finished
    assert torn["transform_metadata"]["work"].output_data["vis_phase"] == "expired"
    with pytest.raises(OSError):
        urllib.request.urlopen(ready["url"], timeout=10)
    # One instance for the task, though two routes (the work's request and iDDS's
    # work_processing message about the training) asked for it.
    listed = subprocess.run([*CLI, "--state-dir", str(agent_log.parent / "state"), "list",
                             "--json"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert [row["task_id"] for row in json.loads(listed.stdout)] == [task_id]
