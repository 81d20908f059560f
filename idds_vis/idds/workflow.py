"""``add_visualization``: the one call a workflow author makes (train → visualize → teardown)."""

from __future__ import annotations

from typing import Any

from idds.workflowv2.workflow import Condition

from idds_vis.idds.progress import GLOBAL_PARAMETERS
from idds_vis.idds.works import DEFAULT_START_DEADLINE, TeardownWork, VisualizationWork


def add_visualization(
    workflow: Any,
    training_work: Any,
    tool: str = "mlflow",
    ttl: str | int | float = "24h",
    source: str | None = None,
    *,
    start_deadline: str | int | float = DEFAULT_START_DEADLINE,
) -> tuple[VisualizationWork, TeardownWork]:
    """Add a VisualizationWork after ``training_work`` and a TeardownWork after that.

    The visualization starts when training finishes (``is_finished``: a failed training has
    nothing to show). The teardown runs when the visualization terminates in any way
    (``is_terminated``), so a failed visualization is still cleaned up; a ``false_work`` would
    fire before its predecessor ran (docs/upstream-facts.md), so none is used.
    Declares the ``user_vis_*`` global parameters through which the URL, the key and the
    expiry reach the teardown (and anything else in the workflow that wants the URL).
    """
    name = training_work.get_work_name() if hasattr(training_work, "get_work_name") else None
    base = name or "training"
    vis = VisualizationWork(
        tool=tool,
        ttl=ttl,
        source=source,
        start_deadline=start_deadline,
        training_work_id=training_work.get_internal_id(),
        work_name=f"{base}-visualize-{tool}",
    )
    teardown = TeardownWork(tool=tool, work_name=f"{base}-teardown-{tool}")
    workflow.add_work(vis)
    workflow.add_work(teardown)
    workflow.add_condition(Condition(cond=training_work.is_finished, true_work=vis))
    workflow.add_condition(Condition(cond=vis.is_terminated, true_work=teardown))
    # Workflow delegates to its template (WorkflowBase), which holds the parameters.
    holder = getattr(workflow, "template", workflow)
    parameters = dict(getattr(holder, "global_parameters", None) or {})
    for key in GLOBAL_PARAMETERS:
        parameters.setdefault(key, None)
    workflow.set_global_parameters(parameters)
    return vis, teardown
