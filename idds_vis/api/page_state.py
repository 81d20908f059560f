"""What the permalink page says in each phase: headline, detail, the progress steps, the action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from idds_vis.api.views import STEPS, in_text, scrub_paths, steps, when_text
from idds_vis.domain.expiry import format_duration
from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.phases import IN_FLIGHT, Phase

# How each tool is written for people.
TOOL_LABELS = {"mlflow": "MLflow"}
_WORKING = {
    Phase.RESOLVING: "Finding the task's artefacts.",
    Phase.STAGING: "Copying the task's MLflow data to a private place.",
    Phase.DEPLOYING: "Starting a dedicated MLflow UI.",
    Phase.STARTING: "Waiting for the MLflow UI to answer through its public address.",
}


def page_state(
    task_name: str,
    tool: str,
    inst: Instance | None,
    history: list[PhaseEvent],
    now: datetime,
    *,
    refusal: str | None = None,
    ttl: str | None = None,
    withheld: str | None = None,
) -> dict[str, Any]:
    """The template context of the page's live part; ``phase`` and ``url`` also drive the JS.

    ``withheld``: the caller may not see the UI (issue 17), so its URL, which carries the
    instance's unguessable path, is left out and this says why and whom to ask.
    """
    label = TOOL_LABELS.get(tool, tool)
    state: dict[str, Any] = {
        "task_name": task_name,
        "tool": tool,
        "tool_label": label,
        "ttl": ttl,
        "phase": inst.phase.value if inst else ("refused" if refusal else "none"),
        "attempt": inst.attempt if inst else 0,
        "url": None,
        "steps": steps(inst, history),
        "action": None,
        "detail": "",
        "expires": None,
        "withheld": False,
    }
    if inst is None:
        if refusal:
            state.update(headline="Cannot start a visualization", detail=scrub_paths(refusal),
                         action="retry")  # fmt: skip
        else:
            detail = f"Press Start to bring up a read-only {label} UI of this task."
            state.update(headline="Not started yet", action="start", detail=detail)
    elif inst.phase is Phase.REQUESTED:
        state.update(headline="Queued", detail="Waiting for a free worker.")
    elif inst.phase in IN_FLIGHT:
        # The headline is the current step's own words: it never tells an earlier step.
        state.update(headline=dict(STEPS)[inst.phase], detail=_WORKING[inst.phase])
    elif inst.phase is Phase.READY:
        state.update(headline=f"The {label} UI is live", url=None if withheld else inst.url)
        if withheld:
            state.update(detail=withheld, withheld=True)
        if inst.expires_at is not None:
            left = in_text(inst.expires_at - now)
            state["expires"] = f"{when_text(inst.expires_at)} (in {left})"
    elif inst.phase is Phase.EXPIRING:
        state.update(headline="Shutting down", detail="Its time is up; the UI is being removed.")
    elif inst.phase is Phase.EXPIRED:
        # "ended", not "expired": a UI stopped by a person ends the same way (issue 19).
        state.update(headline="This visualization has ended", action="relaunch",
                     detail=scrub_paths(inst.reason or _expired_detail(inst)))  # fmt: skip
    else:
        state.update(headline="The visualization failed", action="relaunch",
                     detail=scrub_paths(inst.reason or "The agent gave no reason."))  # fmt: skip
    return state


def _expired_detail(inst: Instance) -> str:
    ttl = format_duration(inst.ttl)
    if inst.expires_at is None:
        return f"It was ended before it became live (its lifetime was {ttl})."
    return (
        f"It was live until {when_text(inst.expires_at)} and has been removed (its time was "
        "up, or it was stopped). Relaunch it to look again."
    )
