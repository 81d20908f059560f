"""From a trigger to the request to submit: whether the task wants a visualization, and how.

- ``vis_request``: the message says it all, except that an unverified message may not name the
  source of a PanDA task the agent finds the artefacts of itself (``_own_artefacts_first``).
- PanDA ``task_status``: the task's parameters (``getTaskParamsMap``) must hold the
  ``visualization`` permalink that ``idds_vis.panda.with_visualization`` put there at submission;
  a task without one is skipped (acked, nothing recorded). The tool and TTL come from the
  permalink, the owner from the task.
- iDDS ``work_processing``: the work must be the training work of a workflow that has a
  VisualizationWork (``IddsWorks.visualization_request``), otherwise skipped.

Raising a ``VisError`` means the message can never be resolved (it is dead-lettered with the
reason). PanDA or iDDS being down (``SourceUnreachable`` from the adapters) is raised as
``LookupUnavailable``, not a ``VisError``, so the intake gives the message back for a later try.
"""

from __future__ import annotations

import dataclasses
import logging

from idds_vis.domain.errors import InvalidRequest, NotFound, SourceUnreachable, VisError
from idds_vis.domain.expiry import DEFAULT_TTL
from idds_vis.domain.messages import Trigger, request_from_trigger
from idds_vis.domain.models import VisRequest
from idds_vis.domain.permalink import parse_permalink
from idds_vis.ports.tasks import IddsWorks, PandaTasks

log = logging.getLogger(__name__)

VISUALIZATION_KEY = "visualization"


class Unresolvable(VisError):
    """The agent was not given the client this message needs: kept in the dead-letter queue
    (with this reason) until someone configures it and replays them."""


class LookupUnavailable(RuntimeError):
    """PanDA or iDDS could not be asked; the message is retried later."""


class TaskResolver:
    """The intake's resolver (``Intake(resolver=...)``)."""

    def __init__(
        self,
        *,
        panda: PandaTasks | None = None,
        idds: IddsWorks | None = None,
    ) -> None:
        self.panda = panda
        self.idds = idds

    async def __call__(self, trigger: Trigger) -> VisRequest | None:
        if trigger.kind == "vis_request":
            return self._own_artefacts_first(request_from_trigger(trigger), trigger.sender)
        if trigger.kind == "panda_task":
            return await self._panda(trigger)
        request = await self._idds(trigger)
        # The source is the workflow author's, read through iDDS: no credential vouches for it.
        return None if request is None else self._own_artefacts_first(request, None)

    def _own_artefacts_first(self, request: VisRequest, sender: str | None) -> VisRequest:
        """A PanDA task's artefacts are found by the agent itself (``panda_source``, the task's
        outputs): a source named by an unverified message for a PanDA task id is dropped.

        Otherwise whoever publishes first could take a real task id with a source of their
        choosing, and the genuine request would then find it "already" there. A verified
        sender (``message_auth``) may still name one; so may any message where no PanDA
        server is configured, since the agent could not find the artefacts itself.
        """
        unverified = sender is None
        if request.source and unverified and self.panda is not None and request.task_id.isdigit():
            log.warning(
                "task %s: the artefact source named by an unverified %s message is ignored; "
                "PanDA's own record of the task decides where its artefacts are",
                request.task_id, request.origin,
            )  # fmt: skip
            return dataclasses.replace(request, source=None)
        return request

    async def _panda(self, trigger: Trigger) -> VisRequest | None:
        if self.panda is None:
            raise Unresolvable("no PanDA server is configured (panda_url) to read task parameters")
        task_id = int(trigger.task_id)
        try:
            task = await self.panda.task(task_id)
        except SourceUnreachable as exc:
            raise LookupUnavailable(exc.reason) from None
        if task is None:
            raise NotFound(f"PanDA has no task {task_id}")
        entry = task.params.get(VISUALIZATION_KEY)
        if not entry:
            return None
        if not isinstance(entry, str):
            raise InvalidRequest(
                f"the task's {VISUALIZATION_KEY!r} parameter must be the permalink URL that "
                "idds_vis.panda.with_visualization writes"
            )
        try:
            link = parse_permalink(entry)
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"the task's {VISUALIZATION_KEY!r} parameter: {exc.reason}"
            ) from None
        # No source: the pipeline finds the artefacts (PandaArtefacts) when it runs the request.
        return VisRequest(
            task_id=str(task_id),
            tool=link.tool,
            ttl=link.ttl or DEFAULT_TTL,
            origin="panda",
            requested_by=task.user_name,
            task_name=task.task_name or link.task_name,
        )

    async def _idds(self, trigger: Trigger) -> VisRequest | None:
        if self.idds is None:
            raise Unresolvable("no iDDS server is configured (idds_host) to read transforms")
        if trigger.request_id is None or trigger.workload_id is None:
            return None  # parse_message guarantees both for a Finished work
        try:
            return await self.idds.visualization_request(
                trigger.request_id, trigger.transform_id, trigger.workload_id
            )
        except SourceUnreachable as exc:
            raise LookupUnavailable(exc.reason) from None
