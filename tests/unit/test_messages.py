"""Broker message parsing: the real PanDA/iDDS bodies, every reject reason, and fuzzing.

The fixtures are copies of the shared captures (docs/upstream-facts.md) in tests/fixtures/messages.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idds_vis.domain.expiry import DEFAULT_TTL
from idds_vis.domain.messages import (
    MAX_BODY_BYTES,
    PANDA_TASK_STATUSES,
    EndRequest,
    Ignore,
    ParseOptions,
    Reject,
    Trigger,
    dedup_key,
    parse_message,
    request_from_trigger,
)
from tests.message_fixtures import fixture_body, fixture_message


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def parse(data: bytes, **options: Any) -> Any:
    return parse_message({}, data, ParseOptions(**options) if options else None)


# -- the real messages ----------------------------------------------------------------------


def test_idds_work_processing_fixture_triggers():
    headers, data = fixture_message("idds_work_processing_finished.json")
    parsed = parse_message(headers, data)
    assert parsed == Trigger(
        kind="idds_work",
        task_id="idds:2/551521",
        workload_id=551521,
        request_id=2,
        transform_id=1,
        status="Finished",
        source=None,
        ttl=None,
        tool="mlflow",
    )
    request = request_from_trigger(parsed)
    assert (request.task_id, request.origin, request.ttl) == ("idds:2/551521", "idds", DEFAULT_TTL)


def test_panda_task_status_fixture_triggers():
    headers, data = fixture_message("panda_task_status_done.json")
    parsed = parse_message(headers, data)
    assert isinstance(parsed, Trigger)
    assert (parsed.kind, parsed.task_id, parsed.status) == ("panda_task", "1", "done")
    assert request_from_trigger(parsed).origin == "panda"


def test_panda_job_status_fixture_is_ignored():
    headers, data = fixture_message("panda_job_status_finished.json")
    assert isinstance(parse_message(headers, data), Ignore)


def test_idds_replays_share_one_dedup_key_whatever_the_message_id():
    headers, data = fixture_message("idds_work_processing_finished.json")
    keys = {dedup_key({**headers, "message-id": f"ID:replay-{i}"}, data) for i in range(3)}
    assert len(keys) == 1 and None not in keys
    failed = json.loads(data) | {"status": "Failed"}
    assert dedup_key(headers, json.dumps(failed).encode()) is None  # not a trigger
    other = json.loads(data) | {"workload_id": 551522}
    assert dedup_key(headers, json.dumps(other).encode()) not in keys


# -- PanDA task_status ----------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(PANDA_TASK_STATUSES - {"done"}))
def test_panda_statuses_other_than_done_are_ignored_by_default(status):
    parsed = parse(body(msg_type="task_status", taskid=5, status=status, timestamp=1))
    assert isinstance(parsed, Ignore)
    assert "only done triggers" in parsed.reason


def test_finished_triggers_when_configured_and_prepared_never_can():
    both = {"panda_statuses": frozenset({"done", "finished"})}
    msg = body(msg_type="task_status", taskid=5, status="finished", timestamp=1)
    assert isinstance(parse(msg, **both), Trigger)
    prepared = body(msg_type="task_status", taskid=5, status="prepared", timestamp=1)
    assert isinstance(parse(prepared, **both), Ignore)
    with pytest.raises(ValueError, match="prepared"):
        ParseOptions(panda_statuses=frozenset({"done", "prepared"}))
    with pytest.raises(ValueError):
        ParseOptions(panda_statuses=frozenset())


def test_unknown_panda_status_is_ignored_and_said_to_be_unknown():
    parsed = parse(body(msg_type="task_status", taskid=5, status="Done"))
    assert isinstance(parsed, Ignore)
    assert "not a known PanDA task status" in parsed.reason


# -- iDDS work_processing -------------------------------------------------------------------


IDDS = fixture_body("idds_work_processing_finished.json")


@pytest.mark.parametrize("status", ["Finished", "finished", "FINISHED"])
def test_idds_finished_triggers_in_any_case(status):
    assert isinstance(parse(body(**IDDS | {"status": status})), Trigger)


@pytest.mark.parametrize("status", ["SubFinished", "Failed", "Transforming", "Cancelled", ""])
def test_idds_other_statuses_are_ignored(status):
    assert isinstance(parse(body(**IDDS | {"status": status})), Ignore)


def test_idds_not_finished_work_needs_no_ids_but_a_finished_one_does():
    running = {"msg_type": "work_processing", "status": "Transforming", "workload_id": None}
    assert isinstance(parse(body(**running)), Ignore)
    without = {k: v for k, v in IDDS.items() if k != "workload_id"}
    parsed = parse(body(**without))
    assert isinstance(parsed, Reject)
    assert parsed.reason == "work_processing message: field 'workload_id' is missing"
    # A work that is no workload of any system (idds-vis's own works are such) sends null.
    no_workload = parse(body(**IDDS | {"workload_id": None}))
    assert isinstance(no_workload, Ignore) and "no workload id" in no_workload.reason


@pytest.mark.parametrize("msg_type", ["file_processing", "collection_processing",
                                      "health_heartbeat", "job_status"])  # fmt: skip
def test_other_known_message_types_are_ignored_not_rejected(msg_type):
    assert isinstance(parse(body(msg_type=msg_type, anything=[1, 2])), Ignore)


# -- vis_request (from VisualizationWork) ---------------------------------------------------


def test_vis_request_with_every_field():
    parsed = parse(body(msg_type="vis_request", task_id="user.jdoe.train/1", tool="mlflow",
                        source="https://host/idds/downloadhpometrics/?workloadid=7",
                        ttl="2h", request_id=2, workload_id=7))  # fmt: skip
    assert isinstance(parsed, Trigger)
    assert parsed.task_id == "user.jdoe.train/1"
    assert parsed.ttl == timedelta(hours=2)
    assert (parsed.request_id, parsed.workload_id) == (2, 7)
    request = request_from_trigger(parsed)
    assert request.source == "https://host/idds/downloadhpometrics/?workloadid=7"
    assert (request.ttl, request.origin) == (timedelta(hours=2), "vis_request")


def test_vis_request_minimal_and_numeric():
    parsed = parse(body(msg_type="vis_request", task_id=42, ttl=3600, source=None))
    assert isinstance(parsed, Trigger)
    assert (parsed.task_id, parsed.tool, parsed.ttl) == ("42", "mlflow", timedelta(hours=1))
    assert parsed.source is None


def test_vis_requests_differing_in_ttl_are_not_replays():
    one = body(msg_type="vis_request", task_id="7", ttl="1h")
    two = body(msg_type="vis_request", task_id="7", ttl="2h")
    assert dedup_key({}, one) != dedup_key({}, two)
    assert dedup_key({}, one) == dedup_key({"message-id": "other"}, one)


def test_a_verified_sender_is_the_requester_and_part_of_the_replay_key():
    """The intake sets the verified sender (idds_vis.domain.senders); the same body from
    another sender is no replay of the first, and the request names who asked."""
    parsed = parse(body(msg_type="vis_request", task_id="7"))
    assert isinstance(parsed, Trigger) and parsed.sender is None
    alice = dataclasses.replace(parsed, sender="alice")
    assert alice.dedup_key != parsed.dedup_key
    assert alice.dedup_key != dataclasses.replace(parsed, sender="mallory").dedup_key
    assert request_from_trigger(alice).requested_by == "alice"
    assert request_from_trigger(parsed).requested_by is None


# -- rejects name the field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "message body is empty"),
        (b"not json", "message body is not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"text"', "must be a JSON object, got a string"),
        (b"{}", "field 'msg_type' is missing"),
        (body(msg_type=3), "field 'msg_type' must be a string, got 3"),
        (body(msg_type="tasks"), "field 'msg_type' is 'tasks', not a message type"),
        (body(msg_type="task_status", status="done"), "field 'taskid' is missing"),
        (body(msg_type="task_status", taskid="abc", status="done"),
         "field 'taskid' must be an integer, got 'abc'"),
        (body(msg_type="task_status", taskid=True, status="done"),
         "field 'taskid' must be an integer, got true"),
        (body(msg_type="task_status", taskid=1.5, status="done"),
         "field 'taskid' must be an integer, got 1.5"),
        (body(msg_type="task_status", taskid=-3, status="done"),
         "field 'taskid' must be a positive integer"),
        (body(msg_type="task_status", taskid=2**70, status="done"),
         "field 'taskid' must be a positive integer below 2**63"),
        (body(msg_type="task_status", taskid=1), "field 'status' is missing"),
        (body(msg_type="task_status", taskid=1, status=["done"]),
         "field 'status' must be a string, got an array"),
        (body(msg_type="task_status", taskid=1, status="done", timestamp="now"),
         "field 'timestamp' must be an integer, got 'now'"),
        (body(**IDDS | {"request_id": "2"}), "field 'request_id' must be an integer, got '2'"),
        (body(**IDDS | {"output": []}), "field 'output' must be an object, got an array"),
        (body(**IDDS | {"error": 5}), "field 'error' must be a string, got 5"),
        (body(msg_type="vis_request"), "field 'task_id' is missing"),
        (body(msg_type="vis_request", task_id=""), "field 'task_id' is empty"),
        (body(msg_type="vis_request", task_id=[1]), "field 'task_id' must be a string or an"),
        (body(msg_type="vis_request", task_id="a\nb"), "field 'task_id' must be one line"),
        (body(msg_type="vis_request", task_id="7", tool="MLflow"), "tool name 'MLflow'"),
        (body(msg_type="vis_request", task_id="7", ttl="soon"), "field 'ttl': cannot read"),
        (body(msg_type="vis_request", task_id="7", ttl=-5), "field 'ttl': duration -5 must be"),
        (body(msg_type="vis_request", task_id="7", ttl=True), "field 'ttl' must be a duration"),
        (body(msg_type="vis_request", task_id="7", ttl="9" * 30 + "d"), "is longer than 3650 days"),
        (body(msg_type="vis_request", task_id="7", source=5), "field 'source' must be a string"),
        (b'{"msg_type": "task_status", "taskid": 1, "taskid": 2, "status": "done"}',
         "field 'taskid' appears twice"),
        (b'{"msg_type": "vis_request", "task_id": "7", "ttl": NaN}', "NaN is not a JSON number"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"msg_type": "task_status", "taskid": ' + b"9" * 5000 + b', "status": "done"}',
         "message body is not JSON"),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else "msg",
)  # fmt: skip
def test_rejects_say_what_is_wrong(data, reason):
    parsed = parse(data)
    assert isinstance(parsed, Reject), parsed
    assert reason in parsed.reason
    assert "\n" not in parsed.reason and len(parsed.reason) < 300


def test_body_size_limit_is_inclusive():
    msg = body(msg_type="task_status", taskid=1, status="done")
    at_limit = msg + b" " * (MAX_BODY_BYTES - len(msg))
    assert isinstance(parse(at_limit), Trigger)
    parsed = parse(at_limit + b" ")
    assert isinstance(parsed, Reject)
    assert parsed.reason == f"message body is {MAX_BODY_BYTES + 1} bytes, over the limit of 65536"


# -- never raises ---------------------------------------------------------------------------

headers_st = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
known_fields = ["msg_type", "taskid", "status", "timestamp", "request_id", "workload_id",
                "transform_id", "relation_type", "output", "error", "task_id", "tool",
                "source", "ttl"]  # fmt: skip
messages_st = st.dictionaries(
    st.sampled_from(known_fields) | st.text(max_size=8),
    json_values
    | st.sampled_from(
        ["task_status", "work_processing", "vis_request", "vis_teardown", "done", "Finished", "24h"]
    ),
    max_size=10,
)


def assert_answer(parsed: object) -> None:
    assert isinstance(parsed, (Trigger, EndRequest, Ignore, Reject))
    if isinstance(parsed, EndRequest):
        assert parsed.task_id and parsed.tool
    elif isinstance(parsed, (Ignore, Reject)):
        assert parsed.reason and "\n" not in parsed.reason and len(parsed.reason) < 400
    else:
        request_from_trigger(parsed)  # a trigger always makes a valid request
        assert parsed.dedup_key


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(headers=headers_st, data=st.binary(max_size=2048))
def test_never_raises_on_arbitrary_bytes(headers, data):
    assert_answer(parse_message(headers, data))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(headers=headers_st, message=messages_st)
def test_never_raises_on_json_objects_with_plausible_fields(headers, message):
    assert_answer(parse_message(headers, json.dumps(message).encode()))


@settings(max_examples=300, database=None)
@given(taskid=st.integers(min_value=1, max_value=2**63 - 1),
       status=st.sampled_from(sorted(PANDA_TASK_STATUSES)),
       timestamp=st.integers(min_value=0, max_value=2**40))  # fmt: skip
def test_valid_task_status_triggers_exactly_on_done(taskid, status, timestamp):
    parsed = parse(body(msg_type="task_status", taskid=taskid, status=status, timestamp=timestamp))
    assert isinstance(parsed, Trigger) == (status == "done")
    if isinstance(parsed, Trigger):
        assert parsed.task_id == str(taskid)


@settings(max_examples=200, database=None)
@given(data=st.binary(min_size=1, max_size=64))
def test_never_raises_on_garbage_around_a_valid_message(data):
    valid = body(msg_type="task_status", taskid=1, status="done")
    for mangled in (data + valid, valid + data, valid[: len(data)] + data):
        assert_answer(parse_message({}, mangled))


def test_vis_teardown_names_the_instance_to_end():
    parsed = parse(body(msg_type="vis_teardown", task_id=4242, tool="mlflow", request_id=7))
    assert parsed == EndRequest(task_id="4242", tool="mlflow", request_id=7, workload_id=None)
    missing = parse(body(msg_type="vis_teardown", tool="mlflow"))
    assert isinstance(missing, Reject) and "'task_id' is missing" in missing.reason
    bad_tool = parse(body(msg_type="vis_teardown", task_id="t", tool="no such tool!"))
    assert isinstance(bad_tool, Reject) and bad_tool.reason.startswith("vis_teardown message")
