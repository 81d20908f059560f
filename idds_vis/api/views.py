"""What the pages and the JSON show of a record: the monitor's JSON shape and the progress steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.phases import Phase

# The steps the progress list shows, in order, with what each means to the person waiting.
STEPS: tuple[tuple[Phase, str], ...] = (
    (Phase.REQUESTED, "Queued"),
    (Phase.RESOLVING, "Finding the task's artefacts"),
    (Phase.STAGING, "Copying the MLflow data"),
    (Phase.DEPLOYING, "Starting the MLflow UI"),
    (Phase.STARTING, "Waiting for the UI to answer"),
    (Phase.READY, "Ready"),
)


def instance_json(inst: Instance, permalink: str | None) -> dict[str, Any]:
    """One entry of ``instances`` in ``GET /api/v1/tasks/...`` (the iDDS work polls this shape)."""
    return {
        "tool": inst.tool,
        "phase": inst.phase.value,
        "url": inst.url,
        "expires_at": iso(inst.expires_at),
        "reason": scrub_paths(inst.reason) if inst.reason else inst.reason,
        "name": inst.name,
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
        "attempt": inst.attempt,
        "permalink": permalink,
    }


# A server path in a reason ("cannot read /srv/idds-vis/state/ui/x/ui.log"): absolute POSIX
# paths (not the path part of a URL: "/" right after a word character, ":" or "/" is not a
# start), file: URIs, home-relative and Windows paths. Each becomes "…/<last name>".
_PATH = re.compile(
    r"file:/{0,3}[^\s'\"<>]*"
    r"|(?<![\w:/.~-])~?/(?:[^\s/'\"<>]+/)*[^\s/'\"<>]*"
    r"|\b[A-Za-z]:\\(?:[^\s\\'\"<>]+\\)*[^\s\\'\"<>]*"
)


def scrub_paths(text: str) -> str:
    """``text`` with the server's file paths cut to their last name: reasons shown on pages and
    in the JSON tell what went wrong without telling where the agent keeps its files."""

    def short(match: re.Match[str]) -> str:
        found = match.group(0).rstrip(".,;:)")
        tail = match.group(0)[len(found) :]
        name = re.split(r"[/\\]", found.rstrip("/\\"))[-1]
        return ("…/" + name if name and not name.endswith(":") else "…") + tail

    return _PATH.sub(short, text)


def plural(count: int, word: str, words: str | None = None) -> str:
    """ "1 visualization", "2 visualizations", "0 visualizations"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def when_text(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def in_text(delta: timedelta) -> str:
    """ "3 h 5 min", "40 s": how long until a time, to the minute once over a minute."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 60:
        seconds -= seconds % 60
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


@dataclass(frozen=True)
class Step:
    phase: str
    label: str
    state: str  # "done", "current", "failed" or "pending"
    at: str | None


def steps(inst: Instance | None, history: list[PhaseEvent]) -> list[Step]:
    """The progress list of the record's current attempt."""
    reached: dict[Phase, datetime] = {}
    for event in history:
        if inst is not None and event.attempt == inst.attempt:
            if event.phase is Phase.REQUESTED:
                reached = {}  # driven again from the start (a restart): earlier steps are moot
            reached[event.phase] = event.at
    order = [phase for phase, _ in STEPS]
    last_reached = max((order.index(p) for p in reached if p in order), default=-1)
    if inst is not None and inst.phase in order:
        # The record and its history are read one after the other: a step the history has
        # already but the record not yet waits for the record, so the list and the headline
        # (made from the record) always tell the same step.
        last_reached = min(last_reached, order.index(inst.phase))
    out = []
    for index, (phase, label) in enumerate(STEPS):
        at = reached.get(phase)
        if inst is None or index > last_reached:
            state = "pending"
        elif index < last_reached or phase is Phase.READY:
            state = "done"
        elif inst.phase is Phase.FAILED:
            state = "failed"
        elif inst.phase is phase:
            state = "current"
        else:
            state = "done"  # moved on to expiring/expired, or back to requested from here
        out.append(Step(phase.value, label, state, when_text(at) if at else None))
    return out
