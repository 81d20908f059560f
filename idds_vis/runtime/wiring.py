"""Builds the agent and its adapters from settings."""

from __future__ import annotations

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.service import Agent
from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.errors import InvalidRequest
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from idds_vis.staging import ArchiveStager


def build_ledger(settings: Settings) -> SqlLedger:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return SqlLedger(settings.db_url)


def build_deployer(settings: Settings) -> LocalProcessDeployer:
    if settings.deployer != "local":
        raise InvalidRequest(f"unknown deployer {settings.deployer!r}: this build has 'local'")
    return LocalProcessDeployer(
        settings.state_dir,
        label=settings.ui_label,
        bind_host=settings.bind_host,
        public_host=settings.public_host,
    )


def build_agent(settings: Settings) -> Agent:
    return Agent(
        ledger=build_ledger(settings),
        stager=ArchiveStager(max_bytes=settings.max_bytes, max_files=settings.max_files),
        deployer=build_deployer(settings),
        probe=HttpReadinessProbe(),
        clock=SystemClock(),
        workers=settings.workers,
        reconcile_interval=settings.reconcile_interval.total_seconds(),
        start_timeout=settings.start_timeout.total_seconds(),
        max_ttl=settings.max_ttl,
    )
