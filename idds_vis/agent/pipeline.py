"""One request from claimed to ready: resolve, stage, deploy, verify, record."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from idds_vis.agent import logctx
from idds_vis.agent.events import EventBus
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.domain.errors import InvalidRequest, InvalidTransition, VisError
from idds_vis.domain.expiry import expiry_after
from idds_vis.domain.models import Instance
from idds_vis.domain.phases import Phase
from idds_vis.domain.source_policy import MESSAGE_ORIGINS
from idds_vis.ports import Clock, Deployer, Ledger, ReadinessProbe, Recorder, Stager

log = logging.getLogger(__name__)
_TOLD = frozenset({Phase.READY, Phase.FAILED})

# An instance naming no artefact source -> where its artefacts are; raises VisError with the
# reason when there are none (the task does not exist, is not finished, has no outputs...).
SourceResolver = Callable[[Instance], Awaitable[str | None]]


class Pipeline:
    def __init__(
        self,
        *,
        ledger: Ledger,
        stager: Stager,
        deployer: Deployer,
        probe: ReadinessProbe,
        clock: Clock,
        events: EventBus,
        recorders: Sequence[Recorder] = (),
        start_timeout: float = 180.0,
        metrics: AgentMetrics | None = None,
        source_resolver: SourceResolver | None = None,
        message_stager: Stager | None = None,
    ) -> None:
        self.ledger = ledger
        self.stager = stager
        # Stages the sources messages named (MESSAGE_ORIGINS) under the operator's source
        # policy and address guard (idds_vis.staging.guarded); wiring sets it. None: ``stager``.
        self.message_stager = message_stager
        self.deployer = deployer
        self.probe = probe
        self.clock = clock
        self.events = events
        self.recorders = recorders
        self.start_timeout = start_timeout
        self.metrics = metrics or AgentMetrics()
        # Finds the artefacts of a request that names none (a PanDA task's outputs).
        self.source_resolver = source_resolver

    async def _to(self, inst: Instance, phase: Phase, **fields: Any) -> Instance:
        updated = await self.ledger.transition(inst.key, phase, self.clock.now(), **fields)
        if phase is not Phase.FAILED:  # a failure's caller no longer knows the phase it left
            self.metrics.phase_done(inst.phase, inst.updated_at, updated.updated_at)
        logctx.update(phase=phase.value)
        # Every phase is in the ledger's history; the log says at INFO what a person acts on.
        log.log(
            logging.INFO if phase in _TOLD else logging.DEBUG,
            "%s is %s%s", inst.name, phase.value, f": {updated.reason}" if updated.reason else "",
        )  # fmt: skip
        self.events.publish(updated)
        return updated

    async def run(self, inst: Instance) -> Instance:
        """Drive a claimed (resolving) request; any failure ends it failed with its reason."""
        with logctx.bound(**logctx.of(inst)):
            return await self._run(inst)

    async def _run(self, inst: Instance) -> Instance:
        try:
            return await self._drive(inst)
        except InvalidTransition:
            # Torn down or expired while we worked: whatever we started must not outlive it.
            log.info("%s changed phase under the pipeline; cleaning up", inst.name)
            await self.deployer.delete(inst)
            current = await self.ledger.get(inst.key)
            return current or inst
        except VisError as exc:
            self.metrics.failed(type(exc).__name__)
            return await self._fail(inst, exc.reason)
        except Exception as exc:
            log.exception("internal error while handling %s", inst.name)
            self.metrics.failed("InternalError")
            # The reason is public (pages, the monitor's JSON): an exception's text may name
            # internal hosts and paths, so it goes to the log above, and only its kind here.
            return await self._fail(inst, f"internal error in idds-vis ({type(exc).__name__})")

    async def _drive(self, inst: Instance) -> Instance:
        claimed_at = inst.updated_at
        # A source the record holds was named by whoever asked; one the resolver finds comes
        # from the operator's own settings (panda_source...), so it needs no message guard.
        stager = self._stager_for(inst) if inst.source else self.stager
        source = await self.resolve(inst)
        inst = await self._to(inst, Phase.STAGING, source=source)
        staged = None
        dest = self.deployer.staging_dir(inst)
        if dest is not None:
            staged = await stager.stage(source, dest)
        inst = await self._to(inst, Phase.DEPLOYING)
        deployment = await self.deployer.deploy(inst, staged)
        inst = await self._to(inst, Phase.STARTING, handle=deployment.handle)
        await self.deployer.wait_started(inst, deployment, self.start_timeout)
        await self.probe.verify(deployment, staged.experiments if staged else ())
        # A restarted instance keeps the expiry it had: a restart never extends a TTL.
        expires_at = inst.expires_at or expiry_after(self.clock.now(), inst.ttl)
        # On the UI first, so the expiry is everywhere by the time anyone hears "ready".
        await self.deployer.record_expiry(dataclasses.replace(inst, expires_at=expires_at))
        inst = await self._to(inst, Phase.READY, url=deployment.url, expires_at=expires_at)
        self.metrics.launched(claimed_at, inst.updated_at)
        for recorder in self.recorders:
            await recorder.record(inst)
        return inst

    def _stager_for(self, inst: Instance) -> Stager:
        if inst.origin in MESSAGE_ORIGINS and self.message_stager is not None:
            return self.message_stager
        return self.stager

    async def resolve(self, inst: Instance) -> str:
        if inst.source:
            return inst.source
        if self.source_resolver is not None:
            source = await self.source_resolver(inst)
            if source:
                return source
        raise InvalidRequest(f"task {inst.task_id} names no artefact source")

    async def _fail(self, inst: Instance, reason: str) -> Instance:
        await self.deployer.delete(inst)
        try:
            return await self._to(inst, Phase.FAILED, reason=reason)
        except InvalidTransition:
            return await self.ledger.get(inst.key) or inst
