"""What the permalink page calls when a task has no visualization yet."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.models import Instance


class Starter(Protocol):
    """Looks a task up by name and asks for its visualization.

    ``start`` finds the task (newest with that name; a name of digits that names no task is
    taken as the task id, ``task_id_of``: ``/t/4711/mlflow``, issue 19), checks that it
    exists, has finished and has outputs, then submits the request with ``task_name`` set
    (the page finds the record by it) and returns the record, new or existing: it is
    idempotent like ``Agent.submit``. It raises ``VisError`` subclasses whose ``.reason`` is
    shown as is: ``NotFound`` for no such task, ``InvalidRequest`` for a task that has not
    finished or has no outputs, ``SourceUnreachable`` when PanDA cannot be asked. A refused
    start creates no record.
    """

    async def start(
        self,
        task_name: str,
        tool: str,
        ttl: timedelta | None,
        requested_by: str | None,
        *,
        owner: str | None = None,
    ) -> Instance:
        """``owner`` is the task's userName when the permalink names it."""
        ...


def task_id_of(task_name: str) -> str | None:
    """The task id a permalink's name of ASCII digits also stands for (None: not one)."""
    return task_name if task_name.isdigit() and task_name.isascii() else None


class NoTaskLookup:
    """The starter of a web app that has no PanDA to ask: every permalink start is refused."""

    async def start(
        self,
        task_name: str,
        tool: str,
        ttl: timedelta | None,
        requested_by: str | None,
        *,
        owner: str | None = None,
    ) -> Instance:
        raise InvalidRequest(
            f"this idds-vis cannot look task {task_name!r} up in PanDA (no PanDA server is "
            "configured): ask for its visualization with `idds-vis request`"
        )
