"""The identity of the request being served, for code the web app's routes call without
passing it (the permalink's Starter). Bound by the ``authenticate`` middleware."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from idds_vis.domain.identity import Identity

_IDENTITY: ContextVar[Identity | None] = ContextVar("idds_vis_identity", default=None)


def current_identity() -> Identity | None:
    return _IDENTITY.get()


@contextlib.contextmanager
def serving(identity: Identity | None) -> Iterator[None]:
    token = _IDENTITY.set(identity)
    try:
        yield
    finally:
        _IDENTITY.reset(token)
