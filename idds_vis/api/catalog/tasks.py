"""Where the catalog learns about a task: does it exist, has it finished, who owns it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from idds_vis.agent.panda_tasks import PandaArtefacts
from idds_vis.domain.errors import InvalidRequest, NotFound


@dataclass(frozen=True)
class CatalogTask:
    task_id: str
    task_name: str | None
    owner: str | None  # the PanDA task's userName
    source: str | None = None  # None: the pipeline finds the artefacts (PanDA's resolver)


class TaskDirectory(Protocol):
    """Finished tasks with outputs; raises ``NotFound`` (no such task), ``InvalidRequest``
    (not finished, no outputs) or ``SourceUnreachable`` (PanDA cannot be asked)."""

    async def task(self, task_id: str) -> CatalogTask: ...

    async def by_name(self, task_name: str, owner: str | None = None) -> CatalogTask: ...


class PandaDirectory:
    def __init__(self, artefacts: PandaArtefacts) -> None:
        self.artefacts = artefacts

    async def task(self, task_id: str) -> CatalogTask:
        if not task_id.isdigit():
            raise InvalidRequest(f"{task_id!r} is not a PanDA task id (a jediTaskID is a number)")
        task = await self.artefacts.finished_task(int(task_id))
        return CatalogTask(str(task.task_id), task.task_name, task.user_name)

    async def by_name(self, task_name: str, owner: str | None = None) -> CatalogTask:
        task_id = await self.artefacts.panda.task_id_by_name(task_name, owner)
        if task_id is None:
            raise NotFound(f"PanDA has no task named {task_name!r} (in the last 90 days)")
        return await self.task(str(task_id))


class NoDirectory:
    """A web app with no PanDA to ask: the catalog cannot check tasks, so it starts none."""

    async def task(self, task_id: str) -> CatalogTask:
        raise InvalidRequest(
            f"this idds-vis cannot look task {task_id} up (no PanDA server is configured)"
        )

    async def by_name(self, task_name: str, owner: str | None = None) -> CatalogTask:
        raise InvalidRequest(
            f"this idds-vis cannot look task {task_name!r} up (no PanDA server is configured)"
        )
