"""Starts and relaunches with no identity to check: a web app without ``oidc_issuer``.

Before, an anonymous permalink start took any TTL up to the maximum and skipped every quota,
and the same-origin check stops only browsers (a script sends whatever Origin it likes). Now:

- from the network (any client but this machine's loopback; behind ``trusted_proxies`` the
  real client's address) they are refused unless ``allow_anonymous_starts`` is set;
- every anonymous start, local or not, asks for at most ``anonymous_max_ttl`` (the default
  lifetime is cut down to it), and starts only while ``quota_total`` has room and the client's
  address holds fewer than ``anonymous_quota_per_address`` live visualizations. Nothing is
  queued: the visitor has no catalog to follow a queue in, so a full quota is a refusal
  saying what to wait for. The record is requested by ``anonymous <address>``, which is what
  the per-address count and the audit trail see.

Checks and start run under one lock per web app, so two starts cannot both take the last slot
here; replicas sharing a ledger may overshoot by their number, at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from idds_vis.agent.service import Agent
from idds_vis.api.auth.context import Client
from idds_vis.api.auth.denials import Denial
from idds_vis.api.views import plural
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import format_duration
from idds_vis.ports.ledger import AccessLedger
from idds_vis.runtime.config import Settings


class AnonymousRefused(InvalidRequest):
    """An anonymous start or relaunch this web app does not take; ``status`` is its HTTP code."""

    def __init__(self, denial: Denial, reason: str, status: int) -> None:
        super().__init__(reason)
        self.denial = denial
        self.status = status


@dataclass(frozen=True)
class AnonymousLimits:
    from_network: bool = False
    max_ttl: timedelta = timedelta(hours=24)
    per_address: int | None = 2
    total: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> AnonymousLimits:
        return cls(
            from_network=settings.allow_anonymous_starts,
            max_ttl=settings.anonymous_max_ttl,
            per_address=settings.anonymous_quota_per_address,
            total=settings.quota_total,
        )


def actor(client: Client) -> str:
    return f"anonymous {client.address}"


class AnonymousGate:
    def __init__(self, limits: AnonymousLimits, agent: Agent, ledger: AccessLedger) -> None:
        self.limits = limits
        self.agent = agent
        self.ledger = ledger
        self._lock = asyncio.Lock()

    def _refuse(self, denial: Denial, reason: str, status: int) -> AnonymousRefused:
        self.agent.metrics.denied(denial.value)
        return AnonymousRefused(denial, reason, status)

    def from_where(self, client: Client | None) -> Client:
        """The client, when it may start anything at all."""
        if client is not None and (client.local or self.limits.from_network):
            return client
        raise self._refuse(
            Denial.ANONYMOUS_FROM_NETWORK,
            "this idds-vis has no sign-in, and takes starts only from its own machine: ask its "
            "operator to configure sign-in (oidc_issuer) or to allow anonymous starts",
            403,
        )

    def ttl(self, asked: timedelta | None, default: timedelta) -> timedelta:
        """The lifetime of an anonymous start: the default, cut down to the cap, or the asked
        one when within it."""
        cap = self.limits.max_ttl
        if asked is None:
            return min(default, cap)
        if asked > cap:
            raise self._refuse(
                Denial.ANONYMOUS_TTL,
                f"a lifetime of {format_duration(asked)} is over the {format_duration(cap)} a "
                "visualization started without sign-in may have: ask for less",
                400,
            )
        return asked

    def over_limits(self, reason: str | None) -> AnonymousRefused:
        """The operator's quotas would queue it: an anonymous ask does not wait."""
        why = reason or "the quotas are full"
        return self._refuse(Denial.ANONYMOUS_TOTAL, f"{why}: try again when one ends", 429)

    @contextlib.asynccontextmanager
    async def room(self, client: Client) -> AsyncIterator[str]:
        """Hold the gate while there is room for one more start; yields who requests it."""
        async with self._lock:
            held = await self.ledger.holdings(self.agent.clock.now())
            total = self.limits.total
            if total is not None and len(held) >= total:
                raise self._refuse(
                    Denial.ANONYMOUS_TOTAL,
                    (
                        "the one visualization slot is"
                        if total == 1
                        else f"all {total} visualization slots are"
                    )
                    + " in use: try again when one ends",
                    429,
                )
            name = actor(client)
            per_address = self.limits.per_address
            mine = sum(1 for h in held if h.user == name)
            if per_address is not None and mine >= per_address:
                raise self._refuse(
                    Denial.ANONYMOUS_PER_ADDRESS,
                    f"{plural(mine, 'visualization')} started from your address "
                    f"{'is' if mine == 1 else 'are'} live (the limit "
                    f"without sign-in is {per_address}): try again when one of them ends",
                    429,
                )
            yield name


ANONYMOUS = web.AppKey("anonymous_gate", AnonymousGate)
