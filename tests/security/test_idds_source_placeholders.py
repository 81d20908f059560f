"""An iDDS VisualizationWork's source is the workflow author's text: its placeholders are filled
without ``str.format``, whose format spec let a 60-byte source allocate gigabytes on the agent's
event loop (``{workload_id:>2000000000}``) or reach attributes (``{task_id.__class__}``)."""

from __future__ import annotations

from idds_vis.domain.placeholders import fill
from idds_vis.lookup.idds import _request, _Visualization

BOMB = "https://bigpanda.example/hpo/?id={workload_id:>50000000}"


def _source(template: str) -> str | None:
    vis = _Visualization(training_work_id="w1", task_id=None, tool="mlflow", ttl=None,
                         source=template)  # fmt: skip
    return _request(vis, request_id=7, workload_id=551521, transform={}).source


def test_the_documented_placeholders_are_filled() -> None:
    template = "https://bigpanda.example/idds/downloadhpometrics/?workloadid={workload_id}&r={request_id}&t={task_id}"
    assert _source(template) == (
        "https://bigpanda.example/idds/downloadhpometrics/?workloadid=551521&r=7&t=551521"
    )


def test_a_format_spec_or_attribute_is_left_as_written() -> None:
    assert _source(BOMB) == BOMB  # 63 characters, not 50 MB
    assert _source("https://h/{task_id.__class__}/{0}/{}") == "https://h/{task_id.__class__}/{0}/{}"
    assert fill("{unknown}/{task_id}", {"task_id": 5}) == "{unknown}/5"
