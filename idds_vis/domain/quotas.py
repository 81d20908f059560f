"""Quotas on live visualizations, as pure functions over what is held and what is asked.

Limits: live instances per user, per group and in total, and the lifetime a user may hold at
once (the sum, over their live instances, of the time each has left; the full TTL for one not
ready yet). A request over a limit waits in a FIFO queue and starts when room frees up.

Order: asks are taken oldest first. One that fits starts; one that does not keeps its place,
and no later ask of the same user or group overtakes it (a shorter TTL must not jump the
queue); once the total is full, nothing behind it starts. The production role is exempt from
the per-user, per-group and lifetime limits, not from the total.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import format_duration
from idds_vis.domain.identity import normal_group
from idds_vis.domain.models import Instance


@dataclass(frozen=True)
class Limits:
    per_user: int | None = None
    per_group: Mapping[str, int] = field(default_factory=dict)
    total: int | None = None
    user_ttl: timedelta | None = None

    @property
    def any(self) -> bool:
        return bool(
            self.per_user is not None
            or self.per_group
            or self.total is not None
            or self.user_ttl is not None
        )


@dataclass(frozen=True)
class Holding:
    """One live instance, as the quotas see it."""

    user: str | None
    group: str | None
    remaining: timedelta


@dataclass(frozen=True)
class Ask:
    """One waiting request, as the quotas see it; ``id`` orders the queue."""

    id: int
    user: str | None
    group: str | None
    ttl: timedelta
    exempt: bool = False


def charged_group(groups: Collection[str], limits: Limits) -> str | None:
    """The group a request counts against: the first limited group (in configuration order)
    the requester belongs to."""
    mine = {normal_group(g) for g in groups}
    for group in limits.per_group:
        if normal_group(group) in mine:
            return normal_group(group)
    return None


def _group_limit(limits: Limits, group: str | None) -> int | None:
    if group is None:
        return None
    for name, limit in limits.per_group.items():
        if normal_group(name) == group:
            return limit
    return None


def check_ask(ask: Ask, limits: Limits) -> None:
    """Refuse at once a request that could never start, rather than queue it for ever."""
    if ask.exempt:
        return
    if limits.user_ttl is not None and ask.ttl > limits.user_ttl:
        raise InvalidRequest(
            f"TTL {format_duration(ask.ttl)} is over the {format_duration(limits.user_ttl)} "
            "of lifetime one user may hold at once"
        )
    if limits.per_user == 0:
        raise InvalidRequest("no visualizations may be started by users on this service")


def blocked(ask: Ask, held: Sequence[Holding], limits: Limits) -> str | None:
    """Why ``ask`` cannot start now, or None when it fits."""
    if limits.total is not None and len(held) >= limits.total:
        if limits.total == 1:
            return "the one visualization slot is in use"
        return f"all {limits.total} visualization slots are in use"
    if ask.exempt:
        return None
    if limits.per_user is not None and ask.user is not None:
        mine = sum(1 for h in held if h.user == ask.user)
        if mine >= limits.per_user:
            return (
                f"{ask.user} has {mine} live visualization{'' if mine == 1 else 's'} "
                f"(the limit per user is {limits.per_user})"
            )
    group_limit = _group_limit(limits, ask.group)
    if group_limit is not None:
        theirs = sum(1 for h in held if h.group == ask.group)
        if theirs >= group_limit:
            return (
                f"group {ask.group} has {theirs} live visualization{'' if theirs == 1 else 's'} "
                "(its limit is "
                f"{group_limit})"
            )
    if limits.user_ttl is not None and ask.user is not None:
        holding = sum((h.remaining for h in held if h.user == ask.user), timedelta(0))
        if holding + ask.ttl > limits.user_ttl:
            return (
                f"{ask.user} holds {format_duration(holding)} of UI lifetime; "
                f"{format_duration(ask.ttl)} more is over the cap of "
                f"{format_duration(limits.user_ttl)}"
            )
    return None


def admissible(asks: Iterable[Ask], holdings: Iterable[Holding], limits: Limits) -> list[int]:
    """The ids of the waiting asks that start now, in queue order."""
    held = list(holdings)
    waiting_users: set[str] = set()
    waiting_groups: set[str] = set()
    started: list[int] = []
    for ask in sorted(asks, key=lambda a: a.id):
        if limits.total is not None and len(held) >= limits.total:
            break
        queued_ahead = (ask.user is not None and ask.user in waiting_users) or (
            ask.group is not None and ask.group in waiting_groups
        )
        if not queued_ahead and blocked(ask, held, limits) is None:
            started.append(ask.id)
            held.append(Holding(ask.user, ask.group, ask.ttl))
            continue
        if not ask.exempt:
            if ask.user is not None:
                waiting_users.add(ask.user)
            if ask.group is not None:
                waiting_groups.add(ask.group)
    return started


def capacity(
    holdings: Sequence[Holding],
    limits: Limits,
    *,
    user: str | None = None,
    groups: Collection[str] = (),
    waiting: int = 0,
) -> dict[str, Any]:
    """Used and free slots, overall and for one user and their limited groups (JSON-ready)."""

    def slots(used: int, limit: int | None) -> dict[str, int | None]:
        return {"used": used, "limit": limit,
                "free": None if limit is None else max(0, limit - used)}  # fmt: skip

    answer: dict[str, Any] = {"total": slots(len(holdings), limits.total), "waiting": waiting}
    if user is not None:
        answer["user"] = {"name": user, **slots(sum(h.user == user for h in holdings),
                                                   limits.per_user)}  # fmt: skip
        held = sum((h.remaining for h in holdings if h.user == user), timedelta(0))
        cap = limits.user_ttl
        answer["user_ttl"] = {
            "used_seconds": int(held.total_seconds()),
            "limit_seconds": None if cap is None else int(cap.total_seconds()),
            "free_seconds": None if cap is None else max(0, int((cap - held).total_seconds())),
        }
    mine = {normal_group(g) for g in groups}
    answer["groups"] = {
        normal_group(name): slots(sum(h.group == normal_group(name) for h in holdings), limit)
        for name, limit in limits.per_group.items()
        if user is None or normal_group(name) in mine
    }
    return answer


@dataclass(frozen=True)
class Waiting:
    """A request over a limit, waiting in the ledger's queue (``position`` 1 starts next)."""

    task_id: str
    tool: str
    ttl: timedelta
    requested_by: str
    created_at: Any = None  # datetime; set by the ledger
    task_name: str | None = None
    source: str | None = None
    origin: str = "catalog"
    owner: str | None = None
    charged_group: str | None = None
    exempt: bool = False
    id: int = 0
    position: int = 0
    reason: str | None = None  # what it waits for, when known

    def ask(self) -> Ask:
        return Ask(self.id, self.requested_by, self.charged_group, self.ttl, self.exempt)

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "tool": self.tool,
            "phase": "queued",
            "position": self.position,
            "ttl_seconds": int(self.ttl.total_seconds()),
            "requested_by": self.requested_by,
            "queued_at": self.created_at.isoformat() if self.created_at else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Admission:
    """What asking to start gave: the instance (started now, or already live) or a queue place."""

    instance: Instance | None = None
    waiting: Waiting | None = None
    started: bool = False  # this request started it (not already live, not queued)
    # Older waiting requests the same decision started (room had freed up for them too).
    also_started: tuple[Instance, ...] = ()
