"""The real client behind the proxies the operator trusts (``trusted_proxies``).

``X-Forwarded-For`` (and ``-Proto``/``-Host``) are honoured only when the direct peer is a
trusted proxy; anyone else could write them, so a request from anyone else is served with its
peer address. From a trusted peer, aiohttp-remotes' ``XForwardedFiltered`` takes the
right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (the left part
is whatever the client wrote) with the matching proto and host, and clones the request with
them, so ``request.remote`` (rate limits, stream caps, anonymous quotas, logs) is the client.
That middleware alone does not check the direct peer, which is why this one wraps it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp_remotes import XForwardedFiltered

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Set on requests whose forwarding headers came from a trusted proxy.
PROXIED = web.RequestKey("proxied", bool)
_FORWARDING = (hdrs.X_FORWARDED_FOR, hdrs.FORWARDED)


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses; a bad entry is refused with its name."""
    found = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(found)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(text.split("%", 1)[0])
    return None


def peer_of(request: web.Request) -> str | None:
    """The address of the connection's other end (not what any header says)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return None


class TrustedProxies:
    def __init__(self, entries: Sequence[str]) -> None:
        self.networks = parse_networks(entries)
        self._filtered = XForwardedFiltered(set(self.networks)) if self.networks else None

    def trusts(self, address: str | None) -> bool:
        found = _address(address)
        return found is not None and any(found in net for net in self.networks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._filtered is None or not self.trusts(peer_of(request)):
            return await handler(request)
        request[PROXIED] = True
        return await self._filtered.middleware(request, handler)


def is_local(request: web.Request) -> bool:
    """A client on this machine: a loopback address that no untrusted proxy forwarded. A
    request carrying forwarding headers its peer may not set came through some proxy from the
    network, whatever the peer's address."""
    client = _address(request.remote)
    if client is None or not client.is_loopback:
        return False
    forwarded = any(h in request.headers for h in _FORWARDING)
    return not forwarded or bool(request.get(PROXIED))


TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
