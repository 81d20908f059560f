"""The iDDS works without an iDDS: their wiring, their decisions, and their two channels
(a real ActiveMQ to send on, a real HTTP server standing in for the agent's JSON API)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stomp
from idds.common.constants import ProcessingStatus, TransformType
from idds.common.utils import json_dumps, json_loads
from idds.workflowv2.work import Work
from idds.workflowv2.workflow import Workflow

from idds_vis.domain.messages import EndRequest, Trigger, parse_message
from idds_vis.idds import TeardownWork, VisualizationWork, add_visualization, progress
from idds_vis.idds.channel import AgentEndpoint, ChannelError
from tests.activemq import BrokerAddress


def instance(phase: str, **fields: Any) -> dict[str, Any]:
    return {"instances": [{"tool": "mlflow", "phase": phase, **fields}]}


# -- decisions ------------------------------------------------------------------------------


def test_visualization_is_done_when_ready_and_fails_with_the_agents_reason():
    def decide(answer: dict[str, Any] | None, waited: float = 1.0) -> progress.Progress:
        return progress.visualization_progress(answer, "42", "mlflow", waited=waited, deadline=60)

    assert decide(None).resend and decide(None).state == "running"
    assert decide(instance("staging")).state == "running"
    ready = decide(instance("ready", url="https://v/vis/x/", expires_at="2026-11-23T00:00:00"))
    assert ready.state == "finished"
    assert ready.output == {
        "vis_task_id": "42",
        "vis_tool": "mlflow",
        "vis_phase": "ready",
        "vis_url": "https://v/vis/x/",
        "vis_expires_at": "2026-11-23T00:00:00",
    }
    failed = decide(instance("failed", reason="no MLflow data in the task's outputs"))
    assert failed.state == "failed" and failed.output["vis_reason"].startswith("no MLflow data")
    assert decide(instance("expired", url="https://v/vis/x/")).state == "finished"
    assert decide(instance("expired")).state == "failed"
    late = decide(instance("starting"), waited=61)
    assert late.state == "failed" and "still starting" in (late.reason or "")
    lost = decide(None, waited=61)
    assert lost.state == "failed" and not lost.resend
    other_tool = {"instances": [{"tool": "tensorboard", "phase": "ready", "url": "u"}]}
    assert decide(other_tool).resend


def test_teardown_is_done_once_nothing_runs():
    assert progress.teardown_progress(None, "mlflow").state == "finished"
    assert progress.teardown_progress(instance("expired"), "mlflow").state == "finished"
    assert progress.teardown_progress(instance("failed"), "mlflow").state == "finished"
    live = progress.teardown_progress(instance("ready", expires_at="t"), "mlflow")
    assert live.state == "running" and live.output["vis_expires_at"] == "t"


# -- wiring ---------------------------------------------------------------------------------


def test_add_visualization_chains_train_visualize_teardown():
    wf = Workflow()
    train = Work(work_type=TransformType.Processing, work_name="train")
    wf.add_work(train, initial=True)
    wf.set_global_parameters({"user_mine": 1})
    vis, teardown = add_visualization(wf, train, ttl="30m", source="http://h/{workload_id}.tgz")
    assert vis.training_work_id == train.get_internal_id()
    conds = {c.get_internal_id(): c for c in wf.template.conditions.values()}
    triggers = sorted(
        (c.conditions[0].__name__, c.true_works[0].get_internal_id()) for c in conds.values()
    )
    assert triggers == sorted(
        [("is_finished", vis.get_internal_id()), ("is_terminated", teardown.get_internal_id())]
    )
    assert wf.template.global_parameters == {"user_mine": 1} | dict.fromkeys(
        progress.GLOBAL_PARAMETERS
    )
    # What the server rebuilds from the submitted JSON is the same work.
    again = json_loads(json_dumps(vis))
    assert isinstance(again, VisualizationWork)
    assert (again.vis_ttl, again.vis_source, again.training_work_id) == (
        "30m",
        "http://h/{workload_id}.tgz",
        train.get_internal_id(),
    )


def test_bad_parameters_fail_at_authoring_time():
    with pytest.raises(ValueError, match="ttl"):
        VisualizationWork(ttl="forever")
    with pytest.raises(ValueError, match="start_deadline"):
        VisualizationWork(start_deadline="-5m")
    VisualizationWork(loading=True, ttl="forever")  # iDDS rebuilding: attributes come next


def test_the_request_is_keyed_by_the_training_workload_and_templated():
    vis = VisualizationWork(
        ttl="2h", source="https://bigpanda/idds/downloadhpometrics/?workloadid={workload_id}"
    )
    with pytest.raises(ChannelError, match="no task to visualize"):
        vis.vis_request()
    vis.parent_workload_id = 4242
    message = vis.vis_request()
    parsed = parse_message({}, json.dumps(message).encode())
    assert isinstance(parsed, Trigger) and parsed.task_id == "4242"
    assert parsed.source == "https://bigpanda/idds/downloadhpometrics/?workloadid=4242"
    assert parsed.ttl == timedelta(hours=2)
    published = VisualizationWork()
    published.parent_workload_id = 7
    published.user_vis_source = "s3://bucket/train-7.tgz"  # from the training's output_data
    assert published.vis_request()["source"] == "s3://bucket/train-7.tgz"
    fixed = VisualizationWork(task_id="user.me.run1")
    assert fixed.vis_request()["task_id"] == "user.me.run1"


# -- the channels, for real -----------------------------------------------------------------


class AgentApi:
    """A stand-in for the agent's JSON API: answers whatever the test sets, records requests."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.asked.append(self.path)
                task = self.path.rsplit("/", 1)[-1]
                body = api.answers.get(task)
                data = json.dumps(body or {"error": "no such task"}).encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent_api() -> Iterator[AgentApi]:
    api = AgentApi()
    yield api
    api.close()


class Inbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.bodies: queue.Queue[bytes | str] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.bodies.put(frame.body)


@pytest.fixture
def inbox(activemq_broker: BrokerAddress) -> Iterator[tuple[str, Inbox]]:
    destination = f"/queue/idds-vis.works-test.{datetime.now().timestamp()}"
    conn = stomp.Connection12([(activemq_broker.host, activemq_broker.port)])
    listener = Inbox()
    conn.set_listener("inbox", listener)
    conn.connect(activemq_broker.user, activemq_broker.password, wait=True)
    conn.subscribe(destination, id="1", ack="auto")
    yield destination, listener
    conn.disconnect()


@pytest.fixture
def endpoint_env(
    monkeypatch: pytest.MonkeyPatch,
    activemq_broker: BrokerAddress,
    agent_api: AgentApi,
    inbox: tuple[str, Inbox],
) -> None:
    monkeypatch.setenv("IDDS_VIS_BROKERS", f"{activemq_broker.host}:{activemq_broker.port}")
    monkeypatch.setenv("IDDS_VIS_DESTINATION", inbox[0])
    monkeypatch.setenv("IDDS_VIS_BROKER_USER", activemq_broker.user)
    monkeypatch.setenv("IDDS_VIS_BROKER_PASSWORD", activemq_broker.password)
    monkeypatch.setenv("IDDS_VIS_API", agent_api.url)


def processing() -> dict[str, Any]:
    class Proc:
        submitted_at: datetime | None = None

    return {
        "processing_metadata": {"processing": Proc()},
        "submitted_at": None,
        "processing_id": 31,
    }


def received(inbox: tuple[str, Inbox]) -> Any:
    return parse_message({}, str(inbox[1].bodies.get(timeout=30)).encode())


@pytest.mark.usefixtures("endpoint_env")
def test_visualization_work_sends_its_request_and_reports_the_agents_phases(agent_api, inbox):
    vis = VisualizationWork(ttl="1h")
    vis.parent_workload_id = 555
    proc = processing()
    ok, workload, errors = vis.submit_processing(proc)
    assert (ok, workload, errors) == (True, 31, None)
    assert proc["processing_metadata"]["processing"].workload_id == 31
    trigger = received(inbox)
    assert (
        isinstance(trigger, Trigger) and trigger.task_id == "555" and trigger.kind == "vis_request"
    )

    # Not recorded yet (the message is queued): still running, and the request is sent again.
    status, *_, params = vis.poll_processing_updates(proc, {})
    assert status is ProcessingStatus.Running
    assert params["output_metadata"]["vis_phase"] == "sent"
    assert isinstance(received(inbox), Trigger)

    agent_api.answers["555"] = instance("starting")
    status, *_, params = vis.poll_processing_updates(proc, {})
    assert (status, params["output_metadata"]["vis_phase"]) == (
        ProcessingStatus.Running,
        "starting",
    )
    agent_api.answers["555"] = instance("ready", url="http://ui/vis/x/", expires_at="2030-01-01")
    status, *_, params = vis.poll_processing_updates(proc, {})
    assert status is ProcessingStatus.Finished
    assert params["output_metadata"]["vis_url"] == "http://ui/vis/x/"
    assert agent_api.asked[-1] == "/api/v1/tasks/555"


@pytest.mark.usefixtures("endpoint_env")
def test_teardown_work_ends_what_the_visualization_published(agent_api, inbox):
    teardown = TeardownWork()
    teardown.user_vis_task_id = "555"  # what iDDS syncs from the VisualizationWork's output
    teardown.user_vis_tool = "mlflow"
    proc = processing()
    ok, _, _ = teardown.submit_processing(proc)
    assert ok
    assert received(inbox) == EndRequest(task_id="555", tool="mlflow")
    agent_api.answers["555"] = instance("ready", expires_at="2030-01-01")
    status, *_ = teardown.poll_processing_updates(proc, {})
    assert status is ProcessingStatus.Running  # lives to its expiry
    agent_api.answers["555"] = instance("expired")
    status, *_ = teardown.poll_processing_updates(proc, {})
    assert status is ProcessingStatus.Finished
    nothing = TeardownWork()  # the visualization never published a key: nothing to end
    assert nothing.submit_processing(processing())[0]
    assert nothing.poll_processing_updates(processing(), {})[0] is ProcessingStatus.Finished


def test_an_unreachable_agent_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("IDDS_VIS_BROKERS", "127.0.0.1:1")
    monkeypatch.setenv("IDDS_VIS_API", "http://127.0.0.1:1")
    vis = VisualizationWork()
    vis.parent_workload_id = 9
    ok, _, errors = vis.submit_processing(processing())
    assert not ok and "127.0.0.1:1" in (errors or "")
    status, *_ = vis.poll_processing_updates(processing(), {})
    assert status is ProcessingStatus.Running  # within the deadline: keep waiting
    monkeypatch.delenv("IDDS_VIS_BROKERS")
    with pytest.raises(ChannelError, match="IDDS_VIS_BROKERS"):
        AgentEndpoint.from_env()
