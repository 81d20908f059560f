"""Makes what runs match the ledger: no orphan UI, no live record without its UI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from idds_vis.agent.events import EventBus
from idds_vis.agent.reaper import Reaper
from idds_vis.domain.phases import IN_FLIGHT, LIVE, Phase
from idds_vis.ports import Clock, Deployer, Ledger

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    removed_orphans: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    rolled: list[str] = field(default_factory=list)
    finished_expiring: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self, *, ledger: Ledger, deployer: Deployer, reaper: Reaper, clock: Clock, events: EventBus
    ) -> None:
        self.ledger = ledger
        self.deployer = deployer
        self.reaper = reaper
        self.clock = clock
        self.events = events

    async def reconcile(self, *, startup: bool) -> ReconcileReport:
        """At start-up also re-drive requests a crash left mid-pipeline (nobody else owns them)."""
        report = ReconcileReport()
        live = {inst.name: inst for inst in await self.ledger.list(LIVE)}
        running = {ui.name: ui for ui in await self.deployer.running()}
        for name in running:
            if name not in live:
                # The UIs were listed after the ledger was read: a request claimed and deployed
                # in between has a UI but was not live then. Only a UI still without one goes.
                current = await self.ledger.get_by_name(name)
                if current is not None and current.phase in LIVE:
                    continue
                log.warning("removing orphan UI %s: no live ledger record", name)
                await self.deployer.delete_by_name(name)
                report.removed_orphans.append(name)
        for name, inst in live.items():
            if inst.phase is Phase.EXPIRING:
                await self.reaper.finish(inst)
                report.finished_expiring.append(name)
            elif inst.phase in IN_FLIGHT and startup:
                await self.deployer.delete(inst)
                updated = await self.ledger.transition(
                    inst.key,
                    Phase.REQUESTED,
                    self.clock.now(),
                    expect={inst.phase},
                    reason=f"the agent restarted during {inst.phase.value}; starting again",
                )
                self.events.publish(updated)
                report.restarted.append(name)
            elif inst.phase is Phase.READY:
                if name in running and running[name].healthy:
                    report.adopted.append(name)
                    if await self.deployer.roll_to_current(running[name]):
                        report.rolled.append(name)
                    continue
                updated = await self.ledger.transition(
                    inst.key,
                    Phase.REQUESTED,
                    self.clock.now(),
                    expect={Phase.READY},
                    reason="the UI was not running; starting it again",
                )
                self.events.publish(updated)
                report.restarted.append(name)
        return report
