from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from idds_vis.domain.models import VisRequest


@dataclass(frozen=True)
class PandaTask:
    """What the PanDA read API says about one JEDI task."""

    task_id: int
    task_name: str | None
    status: str | None
    user_name: str | None
    params: dict[str, Any] = field(default_factory=dict)  # the task parameters as submitted
    # Output and log containers (``outDS`` of getJediTaskDetails), trailing "/" kept as sent.
    output_containers: tuple[str, ...] = ()


class PandaTasks(Protocol):
    """Reads tasks from a panda-server (panda-client); every method is safe on the event loop.

    Raises ``SourceUnreachable`` when the server cannot be asked (a retry may help) and returns
    None for a task the server does not know.
    """

    async def task(self, task_id: int, *, details: bool = False) -> PandaTask | None:
        """The task's parameters (``getTaskParamsMap``), its name and owner (``taskName`` and
        ``userName`` in them; the server sets ``userName`` at submission); with ``details``
        also its status and output containers (``getJediTaskDetails``), which stay None and
        empty until JEDI has taken the task."""
        ...

    async def task_id_by_name(self, task_name: str, user_name: str | None = None) -> int | None:
        """The newest task id with this name (the permalink is keyed by task name), or None.

        panda-server searches only tasks modified in the last 90 days, and, without
        ``user_name``, only the tasks of the identity asking."""
        ...

    async def output_files(self, task_id: int) -> list[dict[str, Any]]:
        """The files of the task's output and log datasets (``get_files_in_datasets``), one
        dict each: ``lfn``, ``scope``, ``id``, ``status``, ``dataset``, ``dataset_id``. Empty
        for an unknown task or one without such files."""
        ...


class IddsWorks(Protocol):
    """Reads iDDS requests and transforms (idds-client's ClientManager), safe on the event loop."""

    async def visualization_request(
        self, request_id: int, transform_id: int | None, workload_id: int
    ) -> VisRequest | None:
        """The request a finished work asks for: set when it is the training work of a
        workflow with a VisualizationWork, else None. ``SourceUnreachable`` if iDDS cannot
        be asked."""
        ...
