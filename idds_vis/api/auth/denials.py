"""Why the web app refused a request, as the fixed words ``idds_vis_access_denied_total`` is
labelled with (a bounded set: never an address, a name or a free-text reason)."""

from __future__ import annotations

from enum import StrEnum

from aiohttp import web

from idds_vis.api.keys import AGENT


class Denial(StrEnum):
    RATE_LIMIT = "rate_limit"
    TOKEN_REFUSED = "token_refused"
    SIGN_IN_REQUIRED = "sign_in_required"
    CSRF = "csrf"
    CROSS_SITE = "cross_site"
    NOT_ALLOWED = "not_allowed"  # known, but neither owner, tool group nor production
    ANONYMOUS_FROM_NETWORK = "anonymous_from_network"
    ANONYMOUS_TTL = "anonymous_ttl"
    ANONYMOUS_PER_ADDRESS = "anonymous_per_address"
    ANONYMOUS_TOTAL = "anonymous_total"
    STREAMS_PER_CLIENT = "streams_per_client"
    STREAMS_TOTAL = "streams_total"
    SHARE_RATE_LIMIT = "share_rate_limit"  # too many share links made by one person


def count(app: web.Application, reason: Denial) -> None:
    app[AGENT].metrics.denied(reason.value)
