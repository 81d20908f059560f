"""Which request a log line concerns: fields bound for the duration of the work on it.

A context variable, so everything that runs for the request (the pipeline's task, adapters it
awaits, threads started with ``asyncio.to_thread``, which copy the context) logs the same
task id, request id and phase without passing them around. The runtime's log formatter adds
``current()`` to every record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

from idds_vis.domain.models import Instance

_FIELDS: ContextVar[Mapping[str, str]] = ContextVar(
    "idds_vis_log_fields", default=MappingProxyType({})
)


def current() -> Mapping[str, str]:
    return _FIELDS.get()


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add fields to every log line written inside the block (None values are left out)."""
    token = _FIELDS.set(
        {**_FIELDS.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    )
    try:
        yield
    finally:
        _FIELDS.reset(token)


def update(**fields: object) -> None:
    """Change bound fields for the rest of the enclosing ``bound`` block (a new phase)."""
    _FIELDS.set({**_FIELDS.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


def of(inst: Instance) -> dict[str, object]:
    """The fields of a request: its task, tool, phase, and its request id (name and attempt:
    a relaunch is a new request for the same key)."""
    return {
        "task_id": inst.task_id,
        "tool": inst.tool,
        "request_id": f"{inst.name}#{inst.attempt}",
        "phase": inst.phase.value,
    }
