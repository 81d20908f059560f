"""Broker message bodies (PanDA, iDDS, VisualizationWork, TeardownWork) read into one answer.

``parse_message`` never raises. It returns

- ``Trigger``: a finished task someone may want to see (the intake resolves and submits it);
- ``EndRequest``: a TeardownWork's ``vis_teardown``: end that instance (at its expiry if later);
- ``Ignore``: a well-formed message that is not for us (a running task, a job status...): ack it;
- ``Reject``: a malformed message: dead-letter it, with ``reason`` naming the field at fault.

Choices made here (docs/upstream-facts.md):

- PanDA ``task_status`` triggers on the statuses in ``ParseOptions.panda_statuses`` (``done`` by
  default; ``finished`` may be added). Only those two final *successful* statuses can be
  configured: ``prepared`` (and every other status) never triggers.
- iDDS ``work_processing`` triggers on ``Finished``, compared case-insensitively: iDDS sends the
  enum name (``WorkStatus.Finished.name``), and accepting ``finished`` costs nothing while
  ``SubFinished``/``Failed`` still never match. ``output`` is always empty in iDDS 2.6 (the
  transform must be read instead), so it is type-checked and otherwise unused.
- The other message types iDDS itself publishes (file/collection messages, heartbeats) are
  ``Ignore``d, not rejected: on a shared topic they are normal traffic, not poison.
- For a message that will not trigger, only ``msg_type`` and ``status`` are validated; the ids
  are checked once a message would trigger (a non-finished iDDS work may not have a workload id).
- Duplicate keys in a JSON object are rejected: ``{"taskid": 1, "taskid": 2}`` has no single
  meaning. ``NaN``/``Infinity`` are not JSON and are rejected too.
- Ids must be positive integers below 2**63 (bools are not integers here); numbers beyond that
  are reported, never turned into strings (Python refuses to print ints of over 4300 digits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from idds_vis.domain.errors import VisError
from idds_vis.domain.expiry import DEFAULT_TTL, parse_duration
from idds_vis.domain.models import DEFAULT_TOOL, VisRequest
from idds_vis.domain.naming import instance_name

MAX_BODY_BYTES = 64 * 1024
MAX_ID = 2**63 - 1  # PanDA and iDDS ids are database BIGINTs
MAX_TASK_ID_CHARS = 256
MAX_SOURCE_CHARS = 4096
_SHOW_CHARS = 60  # how much of a bad value a reason quotes

Kind = Literal["panda_task", "idds_work", "vis_request"]

# PanDA JEDI task statuses (panda-server 1.0.x, JediTaskSpec). Only done/finished can trigger.
PANDA_TASK_STATUSES = frozenset(
    {
        "registered", "defined", "assigning", "ready", "pending", "scouting", "scouted",
        "running", "prepared", "done", "failed", "finished", "aborting", "aborted",
        "finishing", "topreprocess", "preprocessing", "tobroken", "broken", "toretry",
        "toincexec", "rerefine", "paused", "throttled", "exhausted", "passed", "submitting",
    }
)  # fmt: skip
PANDA_TRIGGERABLE = frozenset({"done", "finished"})

# Message types iDDS 2.6 publishes (idds.common.constants.MessageTypeStr) other than the one
# we act on: normal traffic on a shared topic, so ignored rather than dead-lettered.
IDDS_OTHER_TYPES = frozenset(
    {
        "file_stagein", "collection_stagein", "work_stagein",
        "file_activelearning", "collection_activelearning", "work_activelearning",
        "file_hyperparameteropt", "collection_hyperparameteropt", "work_hyperparameteropt",
        "file_processing", "collection_processing",
        "health_heartbeat", "idds_communication",
        "file_unknown", "collection_unknown", "work_unknown", "content_ext", "async_result",
    }
)  # fmt: skip
PANDA_OTHER_TYPES = frozenset({"job_status"})
IDDS_TRIGGER_STATUS = "finished"  # compared lower-cased; SubFinished and Failed never match

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ParseOptions:
    """What triggers a visualization; ``ValueError`` if asked to trigger on a non-final status."""

    panda_statuses: frozenset[str] = frozenset({"done"})
    max_body_bytes: int = MAX_BODY_BYTES
    default_tool: str = DEFAULT_TOOL

    def __post_init__(self) -> None:
        wrong = set(self.panda_statuses) - PANDA_TRIGGERABLE
        if wrong or not self.panda_statuses:
            raise ValueError(
                f"PanDA trigger statuses must be done and/or finished, not {sorted(wrong)}"
            )
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")


@dataclass(frozen=True)
class Trigger:
    """A finished task to visualize; ``task_id`` is the ledger key the intake uses by default.

    PanDA: ``task_id`` and ``workload_id`` are the JEDI task id (iDDS calls a PanDA task its
    workload). iDDS: ``task_id`` is ``idds:<request_id>/<workload_id>`` until the transform is
    read to find the PanDA task behind it. vis_request: the ids the VisualizationWork sent.
    """

    kind: Kind
    task_id: str
    workload_id: int | None
    request_id: int | None
    transform_id: int | None
    status: str
    source: str | None
    ttl: timedelta | None
    tool: str = DEFAULT_TOOL
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The verified sender (``idds_vis.domain.senders``), set by the intake; None: unverified.
    sender: str | None = None

    @property
    def dedup_key(self) -> str:
        """Same for every replay of one message: type, ids and status; never the message-id."""
        parts: list[object] = [
            self.kind,
            self.task_id,
            self.tool,
            self.request_id,
            self.workload_id,
            self.transform_id,
            self.status.lower(),
        ]
        if self.kind == "vis_request":
            # A new request for the same task with another source or TTL is not a replay.
            ttl = None if self.ttl is None else self.ttl.total_seconds()
            # Nor is one from another sender: an unverified copy seen first must not make
            # the intake drop a verified request as its replay.
            parts += [self.source, ttl, self.sender]
        return json.dumps(parts, separators=(",", ":"))


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Reject:
    reason: str


@dataclass(frozen=True)
class EndRequest:
    """A TeardownWork's ``vis_teardown``: end the (task, tool) instance, at its expiry if later."""

    task_id: str
    tool: str = DEFAULT_TOOL
    request_id: int | None = None
    workload_id: int | None = None


Parsed = Trigger | EndRequest | Ignore | Reject


class _Bad(Exception):
    """Internal: the message is malformed; the argument is the reason."""


def parse_message(
    headers: Mapping[str, str], body: bytes, options: ParseOptions | None = None
) -> Parsed:
    """Read one broker message. Never raises: anything unexpected becomes a ``Reject``.

    ``headers`` are not needed to decide today (the body carries the type), and are taken so
    routing on them later does not change the signature.
    """
    options = options or ParseOptions()
    try:
        return _parse(body, options)
    except _Bad as bad:
        return Reject(str(bad))
    except Exception as exc:  # a bug here must dead-letter one message, not stop the intake
        return Reject(f"message could not be read ({type(exc).__name__}: {_cut(str(exc))})")


def dedup_key(
    headers: Mapping[str, str], body: bytes, options: ParseOptions | None = None
) -> str | None:
    """The replay key of a triggering message, or None (only triggers are worth remembering)."""
    parsed = parse_message(headers, body, options)
    return parsed.dedup_key if isinstance(parsed, Trigger) else None


def request_from_trigger(trigger: Trigger) -> VisRequest:
    """The request a trigger asks for, before any resolution (PanDA params, iDDS transforms)."""
    origin = {"panda_task": "panda", "idds_work": "idds", "vis_request": "vis_request"}
    return VisRequest(
        task_id=trigger.task_id,
        source=trigger.source,
        tool=trigger.tool,
        ttl=trigger.ttl or DEFAULT_TTL,
        origin=origin[trigger.kind],
        requested_by=trigger.sender,
    )


# -- decoding -------------------------------------------------------------------------------


def _parse(body: bytes, options: ParseOptions) -> Parsed:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise _Bad(f"message body must be bytes, got {type(body).__name__}")
    size = len(body)
    if size > options.max_body_bytes:
        raise _Bad(f"message body is {size} bytes, over the limit of {options.max_body_bytes}")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"message body is not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise _Bad("message body is empty")
    try:
        data = _DECODER.decode(text)
    except _Bad:
        raise
    except RecursionError:
        raise _Bad("message body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise _Bad(f"message body is not JSON: {_cut(str(exc))}") from None
    if not isinstance(data, dict):
        raise _Bad(f"message body must be a JSON object, got {_json_type(data)}")
    msg_type = data.get("msg_type")
    if "msg_type" not in data:
        raise _Bad("field 'msg_type' is missing")
    if not isinstance(msg_type, str):
        raise _Bad(f"field 'msg_type' must be a string, got {_show(msg_type)}")
    if msg_type == "task_status":
        return _panda_task(data, options)
    if msg_type == "work_processing":
        return _idds_work(data, options)
    if msg_type == "vis_request":
        return _vis_request(data, options)
    if msg_type == "vis_teardown":
        return _vis_teardown(data, options)
    if msg_type in PANDA_OTHER_TYPES or msg_type in IDDS_OTHER_TYPES:
        return Ignore(f"{msg_type} messages do not start visualizations")
    raise _Bad(
        f"field 'msg_type' is {_show(msg_type)}, not a message type idds-vis reads "
        "(task_status, work_processing, vis_request, vis_teardown)"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # in C: nearly every message on a shared stream passes here
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Bad(f"field {_show(key)} appears twice in one JSON object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise _Bad(f"message body is not JSON: {name} is not a JSON number")


# Built once: ``json.loads`` with any keyword builds a new decoder per call, which cost a
# quarter of the parse of a typical 240-byte message (tests/bench/bench_intake.py).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


# -- the three message types ----------------------------------------------------------------


def _panda_task(data: dict[str, Any], options: ParseOptions) -> Parsed:
    status = _string(data, "status", required=True, context="task_status")
    assert status is not None
    taskid = _ident(data, "taskid", required=True, context="task_status")
    _ident(data, "timestamp", required=False, context="task_status", minimum=0)
    if status not in options.panda_statuses:
        known = "" if status in PANDA_TASK_STATUSES else " (not a known PanDA task status)"
        wanted = " or ".join(sorted(options.panda_statuses))
        return Ignore(f"PanDA task {taskid} is {_show(status)}{known}: only {wanted} triggers")
    assert taskid is not None
    return Trigger(
        kind="panda_task",
        task_id=str(taskid),
        workload_id=taskid,
        request_id=None,
        transform_id=None,
        status=status,
        source=None,
        ttl=None,
        tool=options.default_tool,
    )


def _idds_work(data: dict[str, Any], options: ParseOptions) -> Parsed:
    ctx = "work_processing"
    status = _string(data, "status", required=True, context=ctx)
    assert status is not None
    if status.lower() != IDDS_TRIGGER_STATUS:
        return Ignore(f"iDDS work is {_show(status)}: only Finished triggers")
    request_id = _ident(data, "request_id", required=True, context=ctx)
    if "workload_id" in data and data["workload_id"] is None:
        # iDDS sends null for works that are no workload of any system (idds-vis's own works
        # among them): nothing a PanDA task or the monitor could be keyed on.
        return Ignore(f"iDDS work of request {request_id} has no workload id")
    workload_id = _ident(data, "workload_id", required=True, context=ctx)
    transform_id = _ident(data, "transform_id", required=False, context=ctx)
    relation = _string(data, "relation_type", required=False, context=ctx)
    error = _string(data, "error", required=False, context=ctx, limit=None)
    output = data.get("output")
    if output is not None and not isinstance(output, dict):
        raise _Bad(f"{ctx} message: field 'output' must be an object, got {_show(output)}")
    extra = {"relation_type": relation, "error": error or None}
    return Trigger(
        kind="idds_work",
        task_id=f"idds:{request_id}/{workload_id}",
        workload_id=workload_id,
        request_id=request_id,
        transform_id=transform_id,
        status=status,
        source=None,
        ttl=None,
        tool=options.default_tool,
        extra=extra,
    )


def _vis_request(data: dict[str, Any], options: ParseOptions) -> Parsed:
    ctx = "vis_request"
    task_id, tool = _task_and_tool(data, options, ctx)
    source = _string(data, "source", required=False, context=ctx, limit=MAX_SOURCE_CHARS)
    ttl = _ttl(data, ctx)
    request_id = _ident(data, "request_id", required=False, context=ctx)
    workload_id = _ident(data, "workload_id", required=False, context=ctx)
    return Trigger(
        kind="vis_request",
        task_id=task_id,
        workload_id=workload_id,
        request_id=request_id,
        transform_id=None,
        status="requested",
        source=source or None,
        ttl=ttl,
        tool=tool,
    )


def _vis_teardown(data: dict[str, Any], options: ParseOptions) -> Parsed:
    ctx = "vis_teardown"
    task_id, tool = _task_and_tool(data, options, ctx)
    return EndRequest(
        task_id=task_id,
        tool=tool,
        request_id=_ident(data, "request_id", required=False, context=ctx),
        workload_id=_ident(data, "workload_id", required=False, context=ctx),
    )


def _task_and_tool(data: dict[str, Any], options: ParseOptions, ctx: str) -> tuple[str, str]:
    if "task_id" not in data or data["task_id"] is None:
        raise _Bad(f"{ctx} message: field 'task_id' is missing")
    raw = data["task_id"]
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise _Bad(
            f"{ctx} message: field 'task_id' must be a string or an integer, got {_show(raw)}"
        )
    if isinstance(raw, int):
        task_id = str(_ident(data, "task_id", required=True, context=ctx))
    else:
        task_id = raw.strip()
    if not task_id:
        raise _Bad(f"{ctx} message: field 'task_id' is empty")
    if len(task_id) > MAX_TASK_ID_CHARS or _CONTROL.search(task_id):
        raise _Bad(
            f"{ctx} message: field 'task_id' must be one line of at most "
            f"{MAX_TASK_ID_CHARS} characters, got {_show(task_id)}"
        )
    tool = _string(data, "tool", required=False, context=ctx) or options.default_tool
    try:
        instance_name(task_id, tool)  # the domain's own rule for a usable (task, tool) key
    except VisError as exc:
        raise _Bad(f"{ctx} message: {exc}") from None
    return task_id, tool


# -- field readers --------------------------------------------------------------------------


def _ident(
    data: dict[str, Any], name: str, *, required: bool, context: str, minimum: int = 1
) -> int | None:
    if name not in data or data[name] is None:
        if required:
            raise _Bad(f"{context} message: field {name!r} is missing")
        return None
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{context} message: field {name!r} must be an integer, got {_show(value)}")
    if not minimum <= value <= MAX_ID:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise _Bad(
            f"{context} message: field {name!r} must be {kind} integer below 2**63, "
            f"got {_show(value)}"
        )
    return value


def _string(
    data: dict[str, Any], name: str, *, required: bool, context: str, limit: int | None = 128
) -> str | None:
    if name not in data or data[name] is None:
        if required:
            raise _Bad(f"{context} message: field {name!r} is missing")
        return None
    value = data[name]
    if not isinstance(value, str):
        raise _Bad(f"{context} message: field {name!r} must be a string, got {_show(value)}")
    if limit is not None and len(value) > limit:
        raise _Bad(f"{context} message: field {name!r} is longer than {limit} characters")
    return value


def _ttl(data: dict[str, Any], context: str) -> timedelta | None:
    value = data.get("ttl")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(
            f"{context} message: field 'ttl' must be a duration like \"24h\" or a "
            f"number of seconds, got {_show(value)}"
        )
    if isinstance(value, str) and len(value) > 32:
        raise _Bad(f"{context} message: field 'ttl' is longer than 32 characters")
    try:
        return parse_duration(value)
    except VisError as exc:
        raise _Bad(f"{context} message: field 'ttl': {exc}") from None
    except (OverflowError, ValueError):
        raise _Bad(f"{context} message: field 'ttl' is out of range, got {_show(value)}") from None


# -- showing values in reasons --------------------------------------------------------------


def _show(value: object) -> str:
    """A short, one-line rendering of a bad value for a reason."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        if abs(value) >= 10**_SHOW_CHARS:  # str() of a 5000-digit int raises; never print it
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, str):
        return _cut(repr(value))
    if isinstance(value, float):
        return _cut(repr(value))
    return _json_type(value)


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def _cut(text: str) -> str:
    # isprintable() is False for every character _CONTROL matches: most values skip the regex.
    one_line = text if text.isprintable() else _CONTROL.sub(" ", text)
    return one_line if len(one_line) <= _SHOW_CHARS else one_line[: _SHOW_CHARS - 1] + "…"
