"""Plugging login, the catalog and the quota queue into the web app (``make_app`` calls
``install`` before it adds the other routes, so the guarded permalink relaunch comes first),
with the access rules every request meets: the real client behind ``trusted_proxies`` (the
first middleware), the stream caps and the anonymous gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp_session
from aiohttp import web

from idds_vis.agent.quotas import QuotaQueue
from idds_vis.agent.service import Agent
from idds_vis.api.auth import dev_sign_in
from idds_vis.api.auth.config import AUTH, auth_config
from idds_vis.api.auth.forwarded import TRUSTED_PROXIES, TrustedProxies
from idds_vis.api.auth.middleware import LIMITER, STREAM_CAPS, authenticate
from idds_vis.api.auth.ratelimit import RateLimiter
from idds_vis.api.auth.sessions import storage
from idds_vis.api.auth.streams import StreamCaps
from idds_vis.api.catalog.anonymous import ANONYMOUS, AnonymousGate, AnonymousLimits
from idds_vis.api.catalog.guard import GuardedStarter
from idds_vis.api.catalog.guard import routes as guarded_routes
from idds_vis.api.catalog.service import CATALOG, Catalog, ToolOffer
from idds_vis.api.catalog.tasks import NoDirectory, TaskDirectory
from idds_vis.api.keys import STARTER
from idds_vis.api.page_state import TOOL_LABELS
from idds_vis.api.routes import catalog as catalog_routes
from idds_vis.api.routes import login as login_routes
from idds_vis.api.starter import Starter
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import format_duration
from idds_vis.domain.permalink import TOOLS
from idds_vis.domain.quotas import Limits
from idds_vis.ports.ledger import AccessLedger
from idds_vis.runtime.config import Settings


def limits(settings: Settings) -> Limits:
    return Limits(
        per_user=settings.quota_per_user,
        per_group=dict(settings.quota_per_group),
        total=settings.quota_total,
        user_ttl=settings.quota_user_ttl,
    )


def offers(settings: Settings) -> dict[str, ToolOffer]:
    """The tools on offer (every tool the permalink knows; MLflow today)."""
    found = {}
    for tool in sorted(TOOLS):
        default = settings.tool_default_ttl.get(tool, settings.default_ttl)
        maximum = settings.tool_max_ttl.get(tool, settings.max_ttl)
        if maximum is not None and default > maximum:
            raise InvalidRequest(
                f"{tool}: default TTL {format_duration(default)} is over its maximum "
                f"{format_duration(maximum)}"
            )
        groups = tuple(settings.tool_groups.get(tool, ()))
        found[tool] = ToolOffer(tool, TOOL_LABELS.get(tool, tool), default, maximum, groups)
    return found


def install(
    app: web.Application,
    agent: Agent,
    settings: Settings,
    starter: Starter,
    directory: TaskDirectory | None,
    *,
    queue_poll: float = 5.0,
) -> None:
    auth = auth_config(settings)
    app[AUTH] = auth
    limiter = RateLimiter(settings.rate_limit)
    app[LIMITER] = limiter
    app[STREAM_CAPS] = StreamCaps(settings.stream_limit_per_client, settings.stream_limit_total)
    proxies = TrustedProxies(settings.trusted_proxies)
    app[TRUSTED_PROXIES] = proxies
    # First of all: every rule after it (same origin, rate limits, caps) sees the real client.
    app.middlewares.insert(0, proxies.middleware)
    if auth.dev_sign_in:  # issue 19: loopback clients only, and a banner on every page
        dev_sign_in.install(app)
    if auth.login:
        aiohttp_session.setup(app, storage(auth))
    app.middlewares.append(authenticate)
    ledger = agent.ledger
    if not isinstance(ledger, AccessLedger):
        raise TypeError(f"{ledger!r} keeps no quota queue or audit trail")
    queue = QuotaQueue(agent, ledger, limits(settings), poll_interval=queue_poll)
    catalog = Catalog(agent, ledger, queue, directory or NoDirectory(), offers(settings))
    app[CATALOG] = catalog
    gate = AnonymousGate(AnonymousLimits.of(settings), agent, ledger)
    app[ANONYMOUS] = gate
    app[STARTER] = GuardedStarter(starter, catalog, gate)

    async def background(app: web.Application) -> AsyncIterator[None]:
        runner = asyncio.create_task(queue.run()) if queue.limits.any else None
        try:
            yield
        finally:
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            await limiter.close()
            if auth.oidc is not None:
                await auth.oidc.close()

    app.cleanup_ctx.append(background)
    for module in (login_routes, catalog_routes):
        app.add_routes(module.routes)
    app.add_routes(guarded_routes)
