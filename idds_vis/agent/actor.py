"""Who the current action is done for: bound by the web app for each request it serves, so the
agent's audit trail names the signed-in person whichever route (catalog, permalink) called it.

A context variable, like the log fields (``logctx``): every coroutine a request awaits sees it,
nothing else does. Actions no person asked for (broker messages, the reaper) record their origin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_ACTOR: ContextVar[str | None] = ContextVar("idds_vis_actor", default=None)


def current_actor() -> str | None:
    return _ACTOR.get()


@contextlib.contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)
