"""Builds the agent and its adapters from settings."""

from __future__ import annotations

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.intake import Intake
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.agent.service import Agent
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.messages import Trigger, request_from_trigger
from idds_vis.domain.models import VisRequest
from idds_vis.ledger import SqlLedger
from idds_vis.ports import Deployer
from idds_vis.runtime.config import Settings
from idds_vis.sources.stomp import StompSettings, StompSource
from idds_vis.staging import ArchiveStager


def build_ledger(settings: Settings) -> SqlLedger:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return SqlLedger(settings.db_url)


def build_deployer(settings: Settings, metrics: AgentMetrics | None = None) -> Deployer:
    if settings.deployer == "kubernetes":
        if settings.exposure not in ("ingress", "route"):
            raise InvalidRequest(
                f"exposure must be 'ingress' or 'route', not {settings.exposure!r}"
            )
        ks = KubeSettings(
            namespace=settings.namespace,
            image=settings.ui_image,
            public_host=settings.public_host,
            exposure="route" if settings.exposure == "route" else "ingress",
            ingress_class=settings.ingress_class,
            start_seconds=int(settings.start_timeout.total_seconds()),
            max_bytes=settings.max_bytes,
            max_files=settings.max_files,
        )
        kube = KubeClient(settings.kubeconfig, on_error=metrics.kube_error if metrics else None)
        return KubernetesDeployer(ks, kube)
    if settings.deployer != "local":
        raise InvalidRequest(f"unknown deployer {settings.deployer!r}: use 'local' or 'kubernetes'")
    return LocalProcessDeployer(
        settings.state_dir,
        label=settings.ui_label,
        bind_host=settings.bind_host,
        public_host=settings.public_host,
    )


def build_agent(settings: Settings) -> Agent:
    metrics = AgentMetrics()
    return Agent(
        metrics=metrics,
        ledger=build_ledger(settings),
        stager=ArchiveStager(max_bytes=settings.max_bytes, max_files=settings.max_files),
        deployer=build_deployer(settings, metrics),
        probe=HttpReadinessProbe(),
        clock=SystemClock(),
        workers=settings.workers,
        reconcile_interval=settings.reconcile_interval.total_seconds(),
        start_timeout=settings.start_timeout.total_seconds(),
        max_ttl=settings.max_ttl,
    )


def build_intake(settings: Settings, agent: Agent) -> tuple[StompSource, Intake] | None:
    """The broker intake, when the settings name a broker."""
    if not settings.stomp_hosts:
        return None
    hosts = []
    for entry in settings.stomp_hosts:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidRequest(f"stomp host {entry!r} must be written host:port")
        hosts.append((host, int(port)))
    try:
        stomp = StompSettings(
            hosts=hosts,
            subscriptions=settings.stomp_subscriptions,
            user=settings.stomp_user,
            password=settings.stomp_password,
            dead_letter_destination=settings.stomp_dead_letter,
        )
    except ValueError as exc:
        raise InvalidRequest(f"stomp settings: {exc}") from exc
    source = StompSource(stomp)
    intake = Intake(
        source,
        agent,
        resolver=only_with_a_source,
        on_outcome=lambda _delivery, outcome, _detail: agent.metrics.intake_outcome(outcome.value),
    )
    return source, intake


async def only_with_a_source(trigger: Trigger) -> VisRequest | None:
    """Until PanDA task parameters and iDDS transforms are read, a message that does not say where
    its artefacts are is acknowledged and skipped: it must not become a failed record."""
    return request_from_trigger(trigger) if trigger.source else None
