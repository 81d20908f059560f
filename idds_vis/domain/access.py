"""Who may see a UI: the one access check every path asks (the record API, the local proxy,
the forward-auth endpoint an ingress controller calls).

A UI's results belong to its task's owner, as PanDA and Rucio treat them: the owner (the PanDA
task's ``userName``) and whoever asked for the UI (``requested_by``) see it, so do the members
of the tool's manager groups (who may already stop or extend it) and the production role. The
request's visibility widens that: to named groups, to everyone signed in, or, only where the
operator allows it, to anyone. Pure: no I/O, so every caller decides the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.identity import Identity, normal_group
from idds_vis.domain.share_links import SHARE_REASONS

PRIVATE = "private"
SIGNED_IN = "signed-in"
PUBLIC = "public"
_GROUPS = "groups:"

# Why a look was refused: bounded label values for the metrics (never a user or a task).
ANONYMOUS = "anonymous"
NOT_SHARED = "not_shared"
PUBLIC_NOT_ALLOWED = "public_not_allowed"
UNKNOWN_INSTANCE = "unknown_instance"
# ... and a share link's refusals (domain/share_links.py).
DENIAL_REASONS = (ANONYMOUS, NOT_SHARED, PUBLIC_NOT_ALLOWED, UNKNOWN_INSTANCE, *SHARE_REASONS)


@dataclass(frozen=True)
class Visibility:
    """``private`` (the default), ``groups:a,b``, ``signed-in`` or ``public``."""

    kind: str = PRIVATE
    groups: frozenset[str] = frozenset()

    def __str__(self) -> str:
        if self.kind == _GROUPS:
            return _GROUPS + ",".join(sorted(self.groups))
        return self.kind


def parse_visibility(text: str | None) -> Visibility:
    """The stored or asked-for visibility; a missing one (an older ledger's row) is private."""
    value = (text or "").strip()
    if not value or value == PRIVATE:
        return Visibility()
    if value in (SIGNED_IN, PUBLIC):
        return Visibility(value)
    if value.startswith(_GROUPS):
        groups = frozenset(normal_group(g) for g in value[len(_GROUPS) :].split(",") if g.strip())
        if groups:
            return Visibility(_GROUPS, groups)
    raise InvalidRequest(
        f"visibility {value[:80]!r} is not one of private, signed-in, public or "
        "groups:<group>[,<group>...]"
    )


@dataclass(frozen=True)
class Grant:
    """What decides who sees one UI: its owners, its visibility, the tool's manager groups."""

    owner: str | None  # the PanDA task's userName, when known
    requested_by: str | None
    visibility: Visibility = Visibility()
    manager_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str | None = None  # one of DENIAL_REASONS when refused
    detail: str = ""  # for the person: why, in words

    @property
    def needs_sign_in(self) -> bool:
        return self.reason == ANONYMOUS


def may_view(
    who: Identity | None, grant: Grant, *, login: bool, public_allowed: bool = False
) -> Decision:
    """May ``who`` (None: nobody signed in) see the UI ``grant`` describes?

    ``login`` False (no issuer configured): there are no identities to check, and the UI's
    unguessable path is the capability (whoever was given the URL sees it), as before login.
    """
    if not login:
        return Decision(True)
    if grant.visibility.kind == PUBLIC:
        if public_allowed:
            return Decision(True)
        if who is None:
            return Decision(False, ANONYMOUS, "sign in to see this UI")
    if who is None:
        return Decision(False, ANONYMOUS, "sign in to see this UI")
    if who.production:
        return Decision(True)
    if who.user and who.user in (grant.owner, grant.requested_by):
        return Decision(True)
    if who.in_any(grant.manager_groups):
        return Decision(True)
    kind = grant.visibility.kind
    if kind == SIGNED_IN or (kind == _GROUPS and who.in_any(grant.visibility.groups)):
        return Decision(True)
    whose = f"{grant.owner}'s" if grant.owner else "another user's"
    reason = PUBLIC_NOT_ALLOWED if kind == PUBLIC else NOT_SHARED
    return Decision(False, reason, f"{who.user} may not see this UI: it belongs to {whose} task "
                                   "and is not shared with you")  # fmt: skip


def check_visibility(visibility: Visibility, *, public_allowed: bool) -> None:
    """Refuse a visibility this deployment does not offer."""
    if visibility.kind == PUBLIC and not public_allowed:
        raise InvalidRequest("public UIs are not allowed here: the operator has not enabled them")


def groups_only(groups: Collection[str]) -> Visibility:
    return Visibility(_GROUPS, frozenset(normal_group(g) for g in groups))


def may_share(who: Identity, grant: Grant) -> bool:
    """Share a UI (links, visibility): its owner and the production role only. Not the tool's
    manager groups (they may stop a UI, not hand its results to others), and never a share
    link's holder, who has no identity here at all. Whoever started the UI shares it only
    when the task's owner is unknown: a manager who stopped and started another's UI became
    its requester, and sharing would have handed the owner's results on (red team)."""
    if who.production:
        return True
    if not who.user:
        return False
    if grant.owner is not None:
        return who.user == grant.owner
    return who.user == grant.requested_by


# The origins whose requester is a person signed in here (the catalog, the permalink) or the
# PanDA task's owner (the permalink's PanDA lookup, the resolver). A broker message's sender,
# the CLI and the demo name no web identity: a web user of the same name is not them.
PERSON_ORIGINS = frozenset({"catalog", "permalink", "panda"})


def person_requester(origin: str, requested_by: str | None) -> str | None:
    """``requested_by`` when it names a person of this service, else None (for ``Grant``)."""
    return requested_by if origin in PERSON_ORIGINS else None
