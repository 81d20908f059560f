"""A PanDA task's visualization: is there something to show, and where are its artefacts.

Used twice: by the pipeline, to find the artefacts of a request that names none (a task_status
message, a permalink), and by the permalink's start, to refuse at once (and record nothing) a
task that does not exist, has not finished or has no outputs. A task whose outputs hold no
MLflow data is only found out by staging them: that request ends failed with the reason.

Where the artefacts are, first match wins:

1. ``task_source`` (setting ``panda_source``), a template per task, e.g. BigPanDA's tarball of a
   task's metric files ``https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid={task_id}``;
2. ``outputs_source`` (setting ``panda_outputs_source``), a template per output: with ``{lfn}``
   it names one file (the MLflow archive among the outputs is chosen), without it the output
   container (``s3://bucket/{scope}/{container}/`` stages a prefix, unpacking every archive);
3. otherwise the output container as a Rucio DID, ``rucio://{scope}:{container}``.

The Rucio scope of a name follows docs/upstream-facts.md (``idds_vis.domain.dids``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from idds_vis.agent.service import Agent
from idds_vis.domain.dids import implied_scope
from idds_vis.domain.errors import InvalidRequest, NoMlflowData, NotFound
from idds_vis.domain.expiry import DEFAULT_TTL
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.ports.tasks import PandaTask, PandaTasks

log = logging.getLogger(__name__)

FINISHED = frozenset({"done", "finished"})
_ARCHIVES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_HINTS = ("mlflow", "mlruns", "metric")


def _is_log(name: str, entry: dict[str, Any] | None = None) -> bool:
    if entry is not None and str(entry.get("type", "")).lower() == "log":
        return True
    return ".log." in name or name.rstrip("/").endswith(".log")


class PandaArtefacts:
    def __init__(
        self,
        panda: PandaTasks,
        *,
        task_source: str | None = None,
        outputs_source: str | None = None,
    ) -> None:
        self.panda = panda
        self.task_source = task_source
        self.outputs_source = outputs_source

    async def finished_task(self, task_id: int) -> PandaTask:
        """The task, if it exists, has finished and has outputs; else a VisError saying which."""
        task = await self.panda.task(task_id, details=True)
        if task is None:
            raise NotFound(f"PanDA has no task {task_id}")
        if task.status not in FINISHED:
            status = task.status or "not started by JEDI yet"
            raise InvalidRequest(
                f"task {task_id} is {status}: its results can be shown once it has finished"
            )
        if not self.outputs(task):
            raise InvalidRequest(f"task {task_id} has no outputs: there is nothing to show")
        return task

    @staticmethod
    def outputs(task: PandaTask) -> list[str]:
        return [c.rstrip("/") for c in task.output_containers if c and not _is_log(c)]

    async def source_for(self, task: PandaTask) -> str:
        if self.task_source:
            return self.task_source.format(task_id=task.task_id, task_name=task.task_name or "")
        container = self.outputs(task)[0]
        scope = implied_scope(container)
        if self.outputs_source and "{lfn}" in self.outputs_source:
            chosen = await self._archive(task)
            return self.outputs_source.format(
                task_id=task.task_id, scope=chosen.get("scope") or scope, lfn=chosen["lfn"],
                dataset=chosen.get("dataset") or "", container=container,
            )  # fmt: skip
        if self.outputs_source:
            return self.outputs_source.format(
                task_id=task.task_id, scope=scope, container=container
            )
        return f"rucio://{scope}:{container}"

    async def _archive(self, task: PandaTask) -> dict[str, Any]:
        files = [
            f
            for f in await self.panda.output_files(task.task_id)
            if isinstance(f.get("lfn"), str) and not _is_log(str(f.get("dataset") or ""), f)
        ]
        archives = sorted(
            (f for f in files if f["lfn"].lower().endswith(_ARCHIVES)), key=lambda f: f["lfn"]
        )
        hinted = [f for f in archives if any(h in f["lfn"].lower() for h in _HINTS)]
        if hinted or archives:
            return (hinted or archives)[0]
        names = ", ".join(sorted(f["lfn"] for f in files)[:5]) or "none"
        raise NoMlflowData(
            f"no MLflow data in the outputs of task {task.task_id}: none of its {len(files)} "
            f"output files is an archive ({names})"
        )

    async def __call__(self, inst: Instance) -> str | None:
        """The pipeline's source resolver: a request with a PanDA task id and no source."""
        if not inst.task_id.isdigit():
            return None
        return await self.source_for(await self.finished_task(int(inst.task_id)))


class PandaStarter:
    """The permalink's start: PanDA task by name -> checked -> request submitted (idempotent)."""

    def __init__(self, agent: Agent, artefacts: PandaArtefacts) -> None:
        self.agent = agent
        self.artefacts = artefacts

    async def start(
        self,
        task_name: str,
        tool: str,
        ttl: timedelta | None,
        requested_by: str | None,
        *,
        owner: str | None = None,
    ) -> Instance:
        task_id = await self.artefacts.panda.task_id_by_name(task_name, owner)
        by_id = task_id is None and task_name.isdigit() and task_name.isascii()
        if by_id:  # /t/4711/mlflow: a task id (a CLI-made record has no name, issue 19)
            task_id = int(task_name)
        if task_id is None:
            whose = f" of {owner}" if owner else ""
            raise NotFound(f"PanDA has no task{whose} named {task_name!r} (in the last 90 days)")
        task = await self.artefacts.finished_task(task_id)
        inst, _created = await self.agent.submit(
            VisRequest(
                task_id=str(task_id),
                tool=tool,
                ttl=ttl or DEFAULT_TTL,
                origin="permalink",
                requested_by=requested_by or task.user_name,
                task_name=task.task_name if by_id else task_name,
            )
        )
        return inst
