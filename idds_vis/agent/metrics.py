"""The agent's Prometheus metrics (prometheus-client), one registry per agent.

Names and labels are what operators query (conf/grafana-dashboard.json uses them, and a test
checks that every metric it queries is exported here). Label values are bounded: phases, tools,
outcomes, error class names and HTTP status codes, never task ids or free-text reasons.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from idds_vis.domain.models import Instance
from idds_vis.domain.phases import LIVE, Phase

# Seconds: staging a small archive takes well under a second, a cold MLflow start ~7 s, a
# Kubernetes image pull minutes.
_PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase_seconds = Histogram(
            "idds_vis_phase_seconds",
            "Time a request spent in each launch phase",
            ["phase"],
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.launch_seconds = Histogram(
            "idds_vis_launch_seconds",
            "Time from a request's claim to its UI being verified ready",
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.live = Gauge(
            "idds_vis_live_instances", "Instances not yet ended, by tool", ["tool"], registry=r
        )
        self.requests = Counter(
            "idds_vis_requests_total",
            "Requests that ended a launch, by outcome (ready or failed)",
            ["outcome"],
            registry=r,
        )
        self.failures = Counter(
            "idds_vis_failures_total",
            "Failed requests by the kind of failure (the error class)",
            ["reason"],
            registry=r,
        )
        self.intake = Counter(
            "idds_vis_intake_messages_total",
            "Broker messages handled by the intake, by outcome",
            ["outcome"],
            registry=r,
        )
        self._intake_ignored = self.intake.labels("ignored")
        self.dead_letters = Counter(
            "idds_vis_dead_letters_total", "Messages sent to the dead-letter queue", registry=r
        )
        self.reaper_lateness = Histogram(
            "idds_vis_reaper_lateness_seconds",
            "How long after its expiry an instance started being torn down",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.kube_errors = Counter(
            "idds_vis_kubernetes_api_errors_total",
            "Failed Kubernetes API calls by HTTP status (0: no answer)",
            ["status"],
            registry=r,
        )
        # Issue 18: the local deployer's warm pool of UI processes, by tool.
        self.pool_idle = Gauge(
            "idds_vis_pool_size", "Idle warm-pool UI processes, by tool", ["tool"], registry=r
        )
        self.pool_hits = Counter(
            "idds_vis_pool_hits_total",
            "Launches that took a warm-pool UI process, by tool",
            ["tool"],
            registry=r,
        )
        self.pool_misses = Counter(
            "idds_vis_pool_misses_total",
            "Launches that found the warm pool empty and started cold, by tool",
            ["tool"],
            registry=r,
        )
        self.pool_refill_seconds = Histogram(
            "idds_vis_pool_refill_seconds",
            "Time to start one warm-pool UI process until it listens, by tool",
            ["tool"],
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.access_denied = Counter(
            "idds_vis_access_denied_total",
            "Requests the web app refused by its access rules, by reason (a fixed word)",
            ["reason"],
            registry=r,
        )

    # -- observations -------------------------------------------------------------------------
    def phase_done(self, phase: Phase, started: datetime, ended: datetime) -> None:
        self.phase_seconds.labels(phase.value).observe(max(0.0, (ended - started).total_seconds()))

    def launched(self, claimed_at: datetime, ready_at: datetime) -> None:
        self.requests.labels("ready").inc()
        self.launch_seconds.observe(max(0.0, (ready_at - claimed_at).total_seconds()))

    def failed(self, kind: str) -> None:
        self.requests.labels("failed").inc()
        self.failures.labels(kind).inc()

    def reaped(self, expires_at: datetime | None, now: datetime) -> None:
        if expires_at is not None:
            self.reaper_lateness.observe(max(0.0, (now - expires_at).total_seconds()))

    def intake_ignored(self, count: int = 1) -> None:
        """``intake_outcome("ignored")`` for the receiver's fast path, which reports nearly
        every message: the labelled child is looked up once, not per report."""
        self._intake_ignored.inc(count)

    def intake_outcome(self, outcome: str) -> None:
        self.intake.labels(outcome).inc()
        if outcome == "rejected":
            self.dead_letters.inc()

    def kube_error(self, status: int) -> None:
        self.kube_errors.labels(str(status)).inc()

    # The warm pool's observer (deploy/pool.py's PoolObserver).
    def pool_size(self, tool: str, size: int) -> None:
        self.pool_idle.labels(tool).set(size)

    def pool_hit(self, tool: str) -> None:
        self.pool_hits.labels(tool).inc()

    def pool_miss(self, tool: str) -> None:
        self.pool_misses.labels(tool).inc()

    def pool_refilled(self, tool: str, seconds: float) -> None:
        self.pool_refill_seconds.labels(tool).observe(max(0.0, seconds))

    def denied(self, reason: str) -> None:
        """``reason`` is one of a fixed set of words (``idds_vis.api.auth.denials``)."""
        self.access_denied.labels(reason).inc()

    def count_live(self, instances: Iterable[Instance]) -> None:
        tally = Tally(i.tool for i in instances if i.phase in LIVE)
        for tool in set(tally) | {labels[0] for labels in self._live_tools()}:
            self.live.labels(tool).set(tally.get(tool, 0))

    def _live_tools(self) -> list[tuple[str, ...]]:
        return [tuple(s.labels.values()) for m in self.live.collect() for s in m.samples]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
