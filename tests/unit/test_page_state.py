"""What the permalink page says: the progress steps of the current attempt, and each text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from idds_vis.api.page_state import page_state
from idds_vis.api.refusals import Refusals
from idds_vis.api.views import in_text, steps
from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.phases import Phase

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def record(phase: Phase, attempt: int = 1, **kw: object) -> Instance:
    return Instance(task_id="1", tool="mlflow", name="mlflow-1-6b86b273", phase=phase,
                    source="s", ttl=timedelta(hours=24), created_at=T0, updated_at=T0,
                    attempt=attempt, **kw)  # type: ignore[arg-type]  # fmt: skip


def events(*phases: Phase, attempt: int = 1) -> list[PhaseEvent]:
    return [PhaseEvent("1", "mlflow", p, T0 + timedelta(seconds=i), attempt=attempt)
            for i, p in enumerate(phases)]  # fmt: skip


def states(inst: Instance | None, history: list[PhaseEvent]) -> list[str]:
    return [s.state for s in steps(inst, history)]


def test_steps_follow_the_current_attempt_only() -> None:
    first = events(Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING, Phase.DEPLOYING,
                   Phase.STARTING, Phase.READY, Phase.EXPIRING, Phase.EXPIRED)  # fmt: skip
    second = events(Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING, attempt=2)
    inst = record(Phase.STAGING, attempt=2)
    assert states(inst, first + second) == ["done", "done", "current", "pending", "pending",
                                            "pending"]  # fmt: skip
    assert steps(inst, first + second)[2].at == "2026-01-01 12:00:02 UTC"
    assert states(record(Phase.EXPIRED), first) == ["done"] * 6
    assert states(None, []) == ["pending"] * 6


def test_a_restart_by_the_reconciler_starts_the_steps_again() -> None:
    history = events(Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING, Phase.DEPLOYING,
                     Phase.STARTING, Phase.READY, Phase.REQUESTED, Phase.RESOLVING)  # fmt: skip
    assert states(record(Phase.RESOLVING), history) == ["done", "current"] + ["pending"] * 4


def test_a_failure_marks_the_step_it_happened_in() -> None:
    history = events(Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING, Phase.FAILED)
    inst = record(Phase.FAILED, reason="no MLflow data in s")
    assert states(inst, history) == ["done", "done", "failed", "pending", "pending", "pending"]
    state = page_state("t", "mlflow", inst, history, T0)
    assert (state["headline"], state["detail"], state["action"]) == (
        "The visualization failed",
        "no MLflow data in s",
        "relaunch",
    )


def test_texts_of_each_situation() -> None:
    live = record(Phase.READY, url="http://u/", expires_at=T0 + timedelta(hours=3, seconds=30))
    ready = page_state("t", "mlflow", live, [], T0)
    assert (ready["headline"], ready["url"]) == ("The MLflow UI is live", "http://u/")
    assert ready["expires"] == "2026-01-01 15:00:30 UTC (in 3 h)"
    refused = page_state("t", "mlflow", None, [], T0, refusal="PanDA has no task named 't'")
    assert (refused["phase"], refused["action"]) == ("refused", "retry")
    fresh = page_state("t", "mlflow", None, [], T0)
    assert (fresh["phase"], fresh["action"]) == ("none", "start")
    ended = page_state("t", "mlflow", record(Phase.EXPIRED), [], T0)
    assert ended["detail"] == "It was ended before it became live (its lifetime was 1d)."


def test_in_text() -> None:
    assert in_text(timedelta(hours=23, minutes=59, seconds=59)) == "23 h 59 min"
    assert in_text(timedelta(seconds=42)) == "42 s"
    assert in_text(timedelta(days=1, minutes=5)) == "1 d 5 min"
    assert in_text(timedelta(seconds=-5)) == "0 s"


def test_refusals_are_kept_for_a_while_and_bounded() -> None:
    refusals = Refusals(keep=timedelta(minutes=10), size=2)
    refusals.remember("a", "task 1 is running", T0)
    assert refusals.reason("a", T0 + timedelta(minutes=10)) == "task 1 is running"
    assert refusals.reason("a", T0 + timedelta(minutes=11)) is None  # it may have finished
    refusals.remember("b", "no outputs", T0)
    refusals.remember("c", "no such task", T0)
    assert refusals.reason("a", T0) is None  # the oldest made room
    refusals.forget("c")
    assert (refusals.reason("b", T0), refusals.reason("c", T0)) == ("no outputs", None)
