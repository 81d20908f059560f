"""The lifecycle of one visualization instance and the transitions it may take."""

from __future__ import annotations

from enum import StrEnum

from idds_vis.domain.errors import InvalidTransition


class Phase(StrEnum):
    REQUESTED = "requested"
    RESOLVING = "resolving"
    STAGING = "staging"
    DEPLOYING = "deploying"
    STARTING = "starting"
    READY = "ready"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    FAILED = "failed"


TERMINAL: frozenset[Phase] = frozenset({Phase.EXPIRED, Phase.FAILED})
# Phases in which a pipeline worker owns the request; after a crash they are driven again.
IN_FLIGHT: frozenset[Phase] = frozenset(
    {Phase.RESOLVING, Phase.STAGING, Phase.DEPLOYING, Phase.STARTING}
)
# Phases in which something may run and must eventually be torn down.
LIVE: frozenset[Phase] = frozenset(IN_FLIGHT | {Phase.READY, Phase.EXPIRING})

_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.REQUESTED: frozenset({Phase.RESOLVING, Phase.EXPIRING, Phase.FAILED}),
    Phase.RESOLVING: frozenset({Phase.STAGING, Phase.REQUESTED, Phase.EXPIRING, Phase.FAILED}),
    Phase.STAGING: frozenset({Phase.DEPLOYING, Phase.REQUESTED, Phase.EXPIRING, Phase.FAILED}),
    Phase.DEPLOYING: frozenset({Phase.STARTING, Phase.REQUESTED, Phase.EXPIRING, Phase.FAILED}),
    Phase.STARTING: frozenset({Phase.READY, Phase.REQUESTED, Phase.EXPIRING, Phase.FAILED}),
    # ready -> requested: the reconciler drives again an instance whose UI vanished.
    Phase.READY: frozenset({Phase.EXPIRING, Phase.REQUESTED, Phase.FAILED}),
    Phase.EXPIRING: frozenset({Phase.EXPIRED, Phase.FAILED}),
    # A terminal instance only moves again when a person relaunches it.
    Phase.EXPIRED: frozenset({Phase.REQUESTED}),
    Phase.FAILED: frozenset({Phase.REQUESTED, Phase.EXPIRED}),
}

# The happy path, in order: what a progress display counts steps against.
HAPPY_PATH: tuple[Phase, ...] = (
    Phase.REQUESTED,
    Phase.RESOLVING,
    Phase.STAGING,
    Phase.DEPLOYING,
    Phase.STARTING,
    Phase.READY,
    Phase.EXPIRING,
    Phase.EXPIRED,
)


def can_transition(current: Phase, target: Phase) -> bool:
    return target in _ALLOWED[current]


def check_transition(current: Phase, target: Phase) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(f"cannot go from {current.value} to {target.value}")
