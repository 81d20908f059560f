"""The Grafana dashboard queries only metrics the agent exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from idds_vis.agent.metrics import AgentMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "conf" / "grafana-dashboard.json"
# PromQL words that look like metric names but are functions, keywords or label names.
_NOT_METRICS = {"sum", "rate", "increase", "histogram_quantile", "by", "le", "without", "avg",
                "max", "min", "count", "tool", "outcome", "reason", "phase", "status"}  # fmt: skip


def exported_series() -> set[str]:
    metrics = AgentMetrics()
    # Give every labelled metric one child, so its series appear in the exposition.
    metrics.phase_seconds.labels("staging").observe(1)
    metrics.requests.labels("ready").inc()
    metrics.failures.labels("NoMlflowData").inc()
    metrics.intake.labels("submitted").inc()
    metrics.live.labels("mlflow").set(1)
    metrics.kube_errors.labels("500").inc()
    text = metrics.exposition().decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_queried_metric_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 9
    bare = [re.sub(r"\{[^}]*\}|\[[^]]*\]", "", expr) for expr in exprs]  # no selectors, ranges
    words = {w for expr in bare for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)}
    names = words - _NOT_METRICS
    exported = exported_series()
    assert names and names <= exported, names - exported
    # and the dashboard covers what operators asked for
    for wanted in ("idds_vis_phase_seconds_bucket", "idds_vis_live_instances",
                   "idds_vis_requests_total", "idds_vis_failures_total",
                   "idds_vis_intake_messages_total", "idds_vis_dead_letters_total",
                   "idds_vis_reaper_lateness_seconds_bucket",
                   "idds_vis_kubernetes_api_errors_total"):  # fmt: skip
        assert wanted in names, wanted
