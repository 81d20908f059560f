"""``VisualizationWork`` and ``TeardownWork``: the two steps an ML workflow author adds.

iDDS rebuilds a work on its server by importing this module and calling the class with
``loading=True`` (``idds.common.dict_class.DictClass.load_instance``), then setting every
attribute it serialized; so every parameter has a default, and state lives in attributes.
Both works are non-blocking: ``submit_processing`` sends one message and
``poll_processing_updates`` makes one HTTP GET, each with a timeout (docs/upstream-facts.md).

How the key is found: iDDS sets ``parent_workload_id`` on a work it triggers to the workload id
of the work whose condition fired (``Workflow.enable_next_works``). For the VisualizationWork
that is the training task's id (the PanDA jediTaskID for a PanDA work), the same key a PanDA
``task_status`` message or the monitor uses, so every route leads to one instance.

How data flows on: the VisualizationWork's ``output_metadata`` becomes its ``output_data``, and
iDDS copies each key ``k`` of it into the workflow's global parameter ``user_k`` when the work
ends (``Workflow.sync_global_parameters_from_work``), which the next work receives as an
attribute. ``add_visualization`` declares those parameters (``user_vis_url`` among them).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from idds.common.constants import ProcessingStatus, TransformType
from idds.workflowv2.work import Work

from idds_vis.domain.errors import VisError
from idds_vis.domain.expiry import parse_duration
from idds_vis.domain.models import DEFAULT_TOOL, check_tool
from idds_vis.domain.naming import instance_name
from idds_vis.idds import progress
from idds_vis.idds.channel import AgentEndpoint, ChannelError, send, task_status

log = logging.getLogger(__name__)

_STATUS = {
    "running": ProcessingStatus.Running,
    "finished": ProcessingStatus.Finished,
    "failed": ProcessingStatus.Failed,
}
DEFAULT_START_DEADLINE = "2h"


def _check_duration(value: str | int | float, what: str) -> None:
    try:
        parse_duration(value)
    except VisError as exc:
        raise ValueError(f"{what}: {exc}") from None


class _AgentWork(Work):
    """What both works share: a key (task, tool), the agent endpoint, status mapping."""

    def __init__(
        self,
        tool: str = DEFAULT_TOOL,
        task_id: str | int | None = None,
        work_name: str | None = None,
        loading: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            work_type=TransformType.Processing, work_name=work_name, loading=loading, **kwargs
        )
        self.vis_tool = tool
        # A fixed task id, for a workflow whose training work has no workload id of its own.
        self.vis_task_id = None if task_id is None else str(task_id)
        # Read on every work by iDDS's workflow code; unique within the workflow.
        self.task_name = work_name or f"{type(self).__name__.lower()}-{self.internal_id}"

    # -- what iDDS calls ----------------------------------------------------------------------
    def get_new_input_output_maps(self, mapped_input_output_maps: Any = None) -> dict[str, Any]:
        return {}  # no input collections: the work's job is one message and some polling

    def _endpoint(self) -> AgentEndpoint:
        return AgentEndpoint.from_env()

    @staticmethod
    def _proc(processing: Any) -> Any:
        return processing["processing_metadata"]["processing"]

    @staticmethod
    def _start(processing: Any) -> tuple[bool, Any, str | None]:
        """Mark the processing submitted. iDDS wants a workload id (a 32-bit INTEGER column):
        these works are no workload of any system, so they use their own processing id."""
        proc = processing["processing_metadata"]["processing"]
        workload_id = processing.get("processing_id") or getattr(proc, "processing_id", None)
        proc.workload_id = workload_id
        proc.submitted_at = datetime.datetime.utcnow()
        return True, workload_id, None

    @staticmethod
    def _waited(processing: Any, proc: Any) -> float:
        started = processing.get("submitted_at") or getattr(proc, "submitted_at", None)
        if not isinstance(started, datetime.datetime):
            return 0.0
        return (datetime.datetime.utcnow() - started).total_seconds()

    @staticmethod
    def _answer(status: str, output: dict[str, Any]) -> tuple[Any, ...]:
        # (processing status, content updates, new input/output maps, updated contents,
        #  parameters): the parameters' 'output_metadata' becomes the work's output_data.
        return _STATUS[status], [], {}, [], {"output_metadata": output}


class VisualizationWork(_AgentWork):
    """Asks the idds-vis agent for a UI on the training task's artefacts; done once it is ready.

    Parameters (all optional):

    - ``tool``: the visualization tool (``mlflow``).
    - ``ttl``: how long the UI lives once ready (``"24h"``, ``"90m"``, seconds).
    - ``source``: where the artefacts are; may hold ``{workload_id}``, ``{request_id}`` and
      ``{task_id}`` (e.g. BigPanDA's ``https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid={workload_id}``).
      If None, a ``vis_source`` key the training work put in its output_data is used, and failing
      that the agent resolves the task's outputs itself.
    - ``task_id``: a fixed ledger key, instead of the training work's workload id.
    - ``start_deadline``: fail the work if no UI is ready by then (default 2 h).
    """

    def __init__(
        self,
        tool: str = DEFAULT_TOOL,
        ttl: str | int | float = "24h",
        source: str | None = None,
        task_id: str | int | None = None,
        start_deadline: str | int | float = DEFAULT_START_DEADLINE,
        training_work_id: str | None = None,
        work_name: str | None = None,
        loading: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(tool=tool, task_id=task_id, work_name=work_name, loading=loading, **kwargs)
        if not loading:
            _check_duration(ttl, "ttl")
            _check_duration(start_deadline, "start_deadline")
            instance_name(str(task_id or "1"), check_tool(tool))  # a known tool, a valid name
        self.vis_ttl = ttl
        self.vis_source = source
        self.vis_start_deadline = start_deadline
        # The internal id of the work whose end triggers this one (set by add_visualization);
        # the agent's iDDS resolver uses it to start as soon as training ends.
        self.training_work_id = training_work_id

    def task_key(self) -> str | None:
        if self.vis_task_id:
            return str(self.vis_task_id)
        parent = self.parent_workload_id
        return None if parent in (None, "") else str(parent)

    def artefact_source(self) -> str | None:
        published = getattr(self, "user_vis_source", None)
        if self.vis_source:
            fields = {
                "workload_id": self.parent_workload_id,
                "request_id": self.request_id,
                "task_id": self.task_key(),
            }
            return str(self.vis_source).format(**fields)
        return str(published) if published else None

    def vis_request(self) -> dict[str, Any]:
        task_id = self.task_key()
        if task_id is None:
            raise ChannelError(
                "no task to visualize: the training work has no workload id and no task_id was "
                "given to VisualizationWork"
            )
        message: dict[str, Any] = {
            "msg_type": "vis_request",
            "task_id": task_id,
            "tool": self.vis_tool,
            "ttl": self.vis_ttl,
        }
        source = self.artefact_source()
        if source:
            message["source"] = source
        if isinstance(self.request_id, int) and self.request_id > 0:
            message["request_id"] = self.request_id
        return message

    def submit_processing(self, processing: Any) -> tuple[bool, Any, str | None]:
        try:
            send(self._endpoint(), self.vis_request())
        except ChannelError as exc:
            log.warning("VisualizationWork could not send its request: %s", exc)
            return False, None, str(exc)
        return self._start(processing)

    def poll_processing_updates(
        self, processing: Any, input_output_maps: Any, log_prefix: str = "", **kwargs: Any
    ) -> tuple[Any, ...]:
        proc = self._proc(processing)
        task_id = self.task_key() or ""
        waited = self._waited(processing, proc)
        deadline = parse_duration(self.vis_start_deadline).total_seconds()
        try:
            endpoint = self._endpoint()
            answer = task_status(endpoint, task_id)
        except ChannelError as exc:
            log.warning("%sVisualizationWork cannot read the agent: %s", log_prefix, exc)
            state = progress.agent_unreachable(task_id, self.vis_tool, str(exc), waited, deadline)
            return self._answer(state.state, state.output)
        state = progress.visualization_progress(
            answer, task_id, self.vis_tool, waited=waited, deadline=deadline
        )
        if state.resend:
            try:
                send(endpoint, self.vis_request())
            except ChannelError as exc:
                log.warning("%sVisualizationWork could not resend: %s", log_prefix, exc)
        return self._answer(state.state, state.output)


class TeardownWork(_AgentWork):
    """Ends the visualization: now, or at its expiry if that is later; done once it is gone.

    It reads the instance's key from the global parameters the VisualizationWork published
    (``user_vis_task_id``, ``user_vis_tool``), so it also cleans up after a visualization
    that failed half way. ``task_id`` fixes the key instead.
    """

    def task_key(self) -> str | None:
        if self.vis_task_id:
            return str(self.vis_task_id)
        published = getattr(self, f"user_{progress.TASK_KEY}", None)
        return str(published) if published else None

    def tool_key(self) -> str:
        return str(getattr(self, f"user_{progress.TOOL_KEY}", None) or self.vis_tool)

    def teardown_message(self, task_id: str) -> dict[str, Any]:
        return {"msg_type": "vis_teardown", "task_id": task_id, "tool": self.tool_key()}

    def submit_processing(self, processing: Any) -> tuple[bool, Any, str | None]:
        task_id = self.task_key()
        if task_id is not None:
            try:
                send(self._endpoint(), self.teardown_message(task_id))
            except ChannelError as exc:
                log.warning("TeardownWork could not send: %s", exc)
                return False, None, str(exc)
        return self._start(processing)

    def poll_processing_updates(
        self, processing: Any, input_output_maps: Any, log_prefix: str = "", **kwargs: Any
    ) -> tuple[Any, ...]:
        task_id = self.task_key()
        if task_id is None:
            return self._answer("finished", {progress.PHASE_KEY: "absent"})
        try:
            endpoint = self._endpoint()
            answer = task_status(endpoint, task_id)
        except ChannelError as exc:
            log.warning("%sTeardownWork cannot read the agent: %s", log_prefix, exc)
            return self._answer("running", {})
        state = progress.teardown_progress(answer, self.tool_key())
        phase = state.output.get(progress.PHASE_KEY)
        if state.state == "running" and phase not in ("ready", "expiring"):
            # Still starting: the agent ends it now; ask again in case the first was early.
            try:
                send(endpoint, self.teardown_message(task_id))
            except ChannelError as exc:
                log.warning("%sTeardownWork could not resend: %s", log_prefix, exc)
        return self._answer(state.state, state.output)
