"""What the catalog does for a signed-in person, whichever way they ask (JSON API, its page, a
permalink behind a login): check the tool and the TTL, check who may act on the task, then
start (or queue), extend or stop through the agent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from idds_vis.agent.quotas import QuotaQueue
from idds_vis.agent.service import Agent
from idds_vis.api.catalog.tasks import CatalogTask, TaskDirectory
from idds_vis.domain.access import person_requester
from idds_vis.domain.errors import InvalidRequest, NotFound, VisError
from idds_vis.domain.expiry import format_duration, parse_duration
from idds_vis.domain.identity import Forbidden, Identity, may_change, refusal
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import TERMINAL
from idds_vis.domain.quotas import Admission, Waiting
from idds_vis.ports.ledger import AccessLedger


@dataclass(frozen=True)
class ToolOffer:
    tool: str
    label: str
    default_ttl: timedelta
    max_ttl: timedelta | None
    groups: tuple[str, ...] = ()  # members may manage the UIs of any task

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "label": self.label,
            "default_ttl": format_duration(self.default_ttl),
            "default_ttl_seconds": int(self.default_ttl.total_seconds()),
            "max_ttl": format_duration(self.max_ttl) if self.max_ttl else None,
            "max_ttl_seconds": int(self.max_ttl.total_seconds()) if self.max_ttl else None,
        }


class Catalog:
    def __init__(
        self,
        agent: Agent,
        ledger: AccessLedger,
        queue: QuotaQueue,
        directory: TaskDirectory,
        tools: dict[str, ToolOffer],
    ) -> None:
        self.agent = agent
        self.ledger = ledger
        self.queue = queue
        self.directory = directory
        self.tools = tools

    def offer(self, tool: str) -> ToolOffer:
        if tool not in self.tools:
            known = ", ".join(sorted(self.tools))
            raise InvalidRequest(f"unknown tool {tool!r}: this catalog offers {known}")
        return self.tools[tool]

    def ttl(self, offer: ToolOffer, text: str | timedelta | None) -> timedelta:
        ttl = offer.default_ttl if text is None or text == "" else parse_duration(text)
        if offer.max_ttl is not None and ttl > offer.max_ttl:
            raise InvalidRequest(
                f"TTL {format_duration(ttl)} is over the {offer.label} maximum of "
                f"{format_duration(offer.max_ttl)}"
            )
        return ttl

    def authorize(self, who: Identity, task_id: str, tool: str, owner: str | None) -> None:
        if not may_change(who, owner, self.offer(tool).groups):
            raise Forbidden(refusal(who, owner, task_id, tool))

    async def owner(self, inst: Instance) -> str | None:
        """The task's owner: remembered by the ledger, else asked of PanDA (and remembered)."""
        known = await self.ledger.owner_of(inst.key)
        if known is not None:
            return known
        try:
            task = await self.directory.task(inst.task_id)
        except VisError:
            return None  # nobody can be matched as the owner; groups and production still can
        if task.owner is not None:
            await self.ledger.set_owner(inst.key, task.owner, self.agent.clock.now())
        return task.owner

    async def start(
        self, who: Identity, task: CatalogTask, tool: str, ttl: str | timedelta | None,
        *, origin: str = "catalog",
    ) -> Admission:  # fmt: skip
        offer = self.offer(tool)
        chosen = self.ttl(offer, ttl)
        self.authorize(who, task.task_id, tool, task.owner)
        request = VisRequest(task.task_id, source=task.source, tool=tool, ttl=chosen,
                             origin=origin, requested_by=who.user,
                             task_name=task.task_name)  # fmt: skip
        return await self.queue.request(request, who, task.owner)

    async def start_by_id(
        self, who: Identity, task_id: str, tool: str, ttl: str | None
    ) -> Admission:
        self.offer(tool)  # an unknown tool is refused before PanDA is asked
        return await self.start(who, await self.directory.task(task_id), tool, ttl)

    async def _instance(self, key: InstanceKey) -> Instance:
        inst = await self.agent.ledger.get(key)
        if inst is None:
            raise NotFound(f"no visualization of task {key.task_id} ({key.tool})")
        return inst

    async def extend(self, who: Identity, key: InstanceKey, by: str) -> Instance:
        offer = self.offer(key.tool)
        inst = await self._instance(key)
        self.authorize(who, key.task_id, key.tool, await self.owner(inst))
        step = parse_duration(by)
        now = self.agent.clock.now()
        if inst.expires_at is None or inst.phase in TERMINAL:
            raise InvalidRequest(f"{inst.name} is {inst.phase.value}: only a live UI can be "
                                 "extended")  # fmt: skip
        left = max(inst.expires_at, now) + step - now
        if offer.max_ttl is not None and left > offer.max_ttl:
            room = max(timedelta(0), offer.max_ttl - (max(inst.expires_at, now) - now))
            room -= timedelta(seconds=room.total_seconds() % 60)  # to the minute, downwards
            raise InvalidRequest(
                f"extending by {format_duration(step)} goes over the {offer.label} maximum "
                f"lifetime of {format_duration(offer.max_ttl)}: extend by at most "
                f"{format_duration(room)}"
            )
        cap = self.queue.limits.user_ttl
        if cap is not None and not who.production and inst.requested_by is not None:
            held = sum((h.remaining for h in await self.ledger.holdings(now)
                        if h.user == inst.requested_by), timedelta(0))  # fmt: skip
            if held + step > cap:
                raise InvalidRequest(
                    f"{inst.requested_by} holds {format_duration(held)} of UI lifetime: "
                    f"{format_duration(step)} more is over the cap of {format_duration(cap)}"
                )
        return await self.agent.extend(key, step)

    async def stop(self, who: Identity, key: InstanceKey) -> Instance | Waiting:
        """Stop a live UI (its teardown), or take a queued request out of the queue."""
        inst = await self.agent.ledger.get(key)
        owner = await self.owner(inst) if inst is not None else None
        waiting = next((w for w in await self.queue.queue() if (w.task_id, w.tool) == (
            key.task_id, key.tool)), None)  # fmt: skip
        if waiting is not None:
            self.authorize(who, key.task_id, key.tool, waiting.owner or owner)
            await self.queue.cancel(VisRequest(key.task_id, tool=key.tool), who.user)
            return waiting
        if inst is None:
            raise NotFound(f"no visualization of task {key.task_id} ({key.tool})")
        self.authorize(who, key.task_id, key.tool, owner)
        return await self.agent.teardown(key)

    async def mine(self, who: Identity) -> tuple[list[Instance], list[Waiting]]:
        """The person's visualizations (started by them, or of their tasks) and queued asks.
        A record whose requester is a broker sender, the CLI or the demo of the same name is
        not theirs unless they own its task (``person_requester``; the listing has its URL)."""
        found = await self.ledger.owned_by(who.user)
        mine = [inst for inst in found
                if person_requester(inst.origin, inst.requested_by) == who.user
                or await self.owner(inst) == who.user]  # fmt: skip
        return mine, await self.queue.queue(requested_by=who.user)


CATALOG = web.AppKey("catalog", Catalog)
