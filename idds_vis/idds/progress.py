"""What a VisualizationWork or TeardownWork reports, decided from the agent's JSON for the task.

Pure functions of the agent's answer (``GET /api/v1/tasks/{task_id}``, or None when the agent
has no record), so the iDDS-facing classes stay thin and this is tested without an iDDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from idds_vis.domain.phases import TERMINAL, Phase

State = Literal["running", "finished", "failed"]

# The keys a VisualizationWork puts in its output_data; iDDS turns each into a ``user_<key>``
# global parameter of the workflow once the work ends (Workflow.sync_global_parameters_from_work).
URL_KEY = "vis_url"
TASK_KEY = "vis_task_id"
TOOL_KEY = "vis_tool"
PHASE_KEY = "vis_phase"
EXPIRES_KEY = "vis_expires_at"
REASON_KEY = "vis_reason"
SOURCE_KEY = "vis_source"  # a training work may publish where its artefacts are under this key
GLOBAL_PARAMETERS = tuple(
    f"user_{k}" for k in (URL_KEY, TASK_KEY, TOOL_KEY, EXPIRES_KEY, SOURCE_KEY)
)


@dataclass(frozen=True)
class Progress:
    state: State
    output: dict[str, Any] = field(default_factory=dict)
    resend: bool = False  # the agent has no record: send the request (again; it is idempotent)
    reason: str | None = None


def instance_of(answer: dict[str, Any] | None, tool: str) -> dict[str, Any] | None:
    """The instance of ``tool`` in the agent's answer for a task, if it has one."""
    if not answer:
        return None
    for inst in answer.get("instances") or []:
        if isinstance(inst, dict) and inst.get("tool") == tool:
            return inst
    return None


def visualization_progress(
    answer: dict[str, Any] | None, task_id: str, tool: str, *, waited: float, deadline: float
) -> Progress:
    """Finished once the UI is ready (its URL published), failed with the agent's reason.

    ``waited`` is how long the work has been waiting; past ``deadline`` with no ready UI it
    fails, so a lost agent cannot keep a workflow open for ever.
    """
    base = {TASK_KEY: task_id, TOOL_KEY: tool}
    inst = instance_of(answer, tool)
    if inst is None:
        if waited > deadline:
            reason = f"the idds-vis agent did not take the request within {deadline:.0f} s"
            return Progress("failed", base | {REASON_KEY: reason}, reason=reason)
        return Progress("running", base | {PHASE_KEY: "sent"}, resend=True)
    phase = str(inst.get("phase"))
    output = base | {PHASE_KEY: phase}
    if inst.get("url"):
        output[URL_KEY] = inst["url"]
    if inst.get("expires_at"):
        output[EXPIRES_KEY] = inst["expires_at"]
    if phase == Phase.READY.value or (phase in _ENDED and inst.get("url")):
        # Expired already (a TTL shorter than the poll period) still had a live URL: done.
        return Progress("finished", output)
    if phase in _ENDED:
        reason = str(inst.get("reason") or f"the visualization ended {phase}")
        output[REASON_KEY] = reason
        return Progress("failed", output, reason=reason)
    if waited > deadline:
        reason = f"the UI was not ready after {deadline:.0f} s (still {phase})"
        return Progress("failed", output | {REASON_KEY: reason}, reason=reason)
    return Progress("running", output)


def agent_unreachable(
    task_id: str, tool: str, why: str, waited: float, deadline: float
) -> Progress:
    """Keep waiting through an agent outage, up to the deadline."""
    base = {TASK_KEY: task_id, TOOL_KEY: tool}
    if waited > deadline:
        reason = f"the idds-vis agent could not be reached for {deadline:.0f} s: {why}"
        return Progress("failed", base | {REASON_KEY: reason}, reason=reason)
    return Progress("running", base)


def teardown_progress(answer: dict[str, Any] | None, tool: str) -> Progress:
    """Finished once nothing of the instance runs: ended, or never there."""
    inst = instance_of(answer, tool)
    if inst is None:
        return Progress("finished", {PHASE_KEY: "absent"})
    phase = str(inst.get("phase"))
    if phase in _ENDED:
        return Progress("finished", {PHASE_KEY: phase})
    return Progress("running", {PHASE_KEY: phase, EXPIRES_KEY: inst.get("expires_at")})


_ENDED = frozenset(p.value for p in TERMINAL)
