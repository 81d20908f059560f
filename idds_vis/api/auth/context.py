"""The identity and the client of the request being served, for code the web app's routes call
without passing them (the permalink's Starter). Bound by the ``authenticate`` middleware."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from idds_vis.domain.identity import Identity


@dataclass(frozen=True)
class Client:
    """Where a request came from: the address (behind trusted proxies, the real client's) and
    whether it is this machine (loopback, not forwarded by an untrusted proxy)."""

    address: str
    local: bool = False


_IDENTITY: ContextVar[Identity | None] = ContextVar("idds_vis_identity", default=None)
_CLIENT: ContextVar[Client | None] = ContextVar("idds_vis_client", default=None)


def current_identity() -> Identity | None:
    return _IDENTITY.get()


def current_client() -> Client | None:
    return _CLIENT.get()


@contextlib.contextmanager
def serving(identity: Identity | None, client: Client | None = None) -> Iterator[None]:
    token = _IDENTITY.set(identity)
    client_token = _CLIENT.set(client)
    try:
        yield
    finally:
        _CLIENT.reset(client_token)
        _IDENTITY.reset(token)
