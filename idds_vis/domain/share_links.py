"""Share links (issue 17): the owner of a UI lets a colleague without an account see it.

A share is a ledger record (``Share``) bound to one instance: its (task, tool) key AND the
random path token of the launch it was made for, so a relaunch (a new path token) or the end
of the UI ends every share of it. The link carries a token the web app signs (its share id,
the instance's path, the expiry) and whose hash the record keeps: the token is checked
against the record at every use, so a revocation takes effect at once, and neither a forged
signature nor a leaked signing key alone gets anyone in. A share lets its holder VIEW the UI
only, never act on it (extend, stop, relaunch, share), and never past the UI's own expiry.

Pure: no I/O. The decisions here are what the web app (``api/auth/share_links.py``) applies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase

# Why a share link was refused: bounded label values for the denied-access metrics and the
# audit trail (never a token, a user or a task).
SHARE_INVALID = "share_invalid"  # not a token this web app signed (forged, altered, unknown)
SHARE_REVOKED = "share_revoked"
SHARE_EXPIRED = "share_expired"  # its own expiry or the UI's passed
SHARE_WRONG_INSTANCE = "share_wrong_instance"  # made for another UI than the one asked for
SHARE_ENDED = "share_ended"  # its UI was relaunched (a new path) or ended
SHARE_REASONS = (SHARE_INVALID, SHARE_REVOKED, SHARE_EXPIRED, SHARE_WRONG_INSTANCE, SHARE_ENDED)
# Words for the person holding the link (never the technical reason alone).
REFUSAL_WORDS = {
    SHARE_INVALID: "this share link is not valid (it may have been mistyped or altered)",
    SHARE_REVOKED: "this share link was revoked by the owner of the UI",
    SHARE_EXPIRED: "this share link has expired",
    SHARE_WRONG_INSTANCE: "this share link is for another UI",
    SHARE_ENDED: "the UI this link was shared for has ended or been relaunched",
}
LABEL_MAX = 80
MIN_LIFETIME = timedelta(minutes=1)
# Live (unrevoked, unexpired) links one UI may have at once: plenty for a person sharing with
# colleagues, a bound for a script (the per-person rate limit bounds how fast they are made).
MAX_LIVE_SHARES = 50
# How long an ended (revoked or expired) share's record is kept before it is purged; its
# audit entries (creation, uses, refusals, revocation) stay.
ENDED_SHARES_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class Share:
    id: str  # random, 32 hex: what logs and the audit trail name (never the token)
    task_id: str
    tool: str
    path_token: str  # the launch it was made for
    created_by: str
    created_at: datetime
    expires_at: datetime
    token_hash: str = ""  # sha-256 of the link's token, hex
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    label: str | None = None

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.task_id, self.tool)

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def as_json(self, now: datetime) -> dict[str, Any]:
        """What the owner sees of a share (never its token or hash)."""
        return {
            "id": self.id,
            "task_id": self.task_id,
            "tool": self.tool,
            "label": self.label,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "state": self.state(now),
        }


def new_share_id() -> str:
    return secrets.token_hex(16)


def clean_label(text: str | None) -> str | None:
    """A label for the owner's list: one line of printable text, at most ``LABEL_MAX``."""
    if text is None or not text.strip():
        return None
    label = " ".join(text.split())
    if len(label) > LABEL_MAX or not label.isprintable():
        raise InvalidRequest(f"a share's label is one line of at most {LABEL_MAX} printable "
                             "characters")  # fmt: skip
    return label


def shareable(inst: Instance, now: datetime) -> datetime:
    """The UI's expiry, when a share of ``inst`` may be made now; else a one-line refusal."""
    if inst.phase is not Phase.READY or inst.expires_at is None or inst.path_token is None:
        raise InvalidRequest(f"only a ready UI can be shared: this one is {inst.phase.value}"
                             if inst.path_token is not None else
                             "this UI has no private path (it predates share links): relaunch it "
                             "to share it")  # fmt: skip
    if inst.expires_at - now < MIN_LIFETIME:
        raise InvalidRequest("this UI expires in less than a minute: extend it to share it")
    return inst.expires_at


class TooManyShares(InvalidRequest):
    """The UI has as many live share links as it may have (answered 409)."""


def check_room(shares: list[Share], path_token: str, now: datetime) -> None:
    """Refuse a new share of the UI at ``path_token`` when it has ``MAX_LIVE_SHARES`` live."""
    live = sum(1 for s in shares if s.path_token == path_token and s.state(now) == "active")
    if live >= MAX_LIVE_SHARES:
        raise TooManyShares(
            f"this UI has {live} live share links, the most it may have: revoke one you no "
            "longer need to make another"
        )


def share_expiry(now: datetime, ui_expires_at: datetime, expires_in: timedelta | None) -> datetime:
    """When a new share ends: after ``expires_in``, capped at the UI's expiry (the default)."""
    if expires_in is None:
        return ui_expires_at
    if expires_in < MIN_LIFETIME:
        raise InvalidRequest("a share link lives at least a minute")
    return min(now + expires_in, ui_expires_at)


def refusal(share: Share, inst: Instance | None, segment: str | None, now: datetime) -> str | None:
    """Why ``share`` does not open the UI at ``/vis/<segment>/`` now (None: it does).

    ``inst`` is the live record of the share's (task, tool); ``segment`` the path asked for
    (None at the link itself, which always leads to the share's own UI).
    """
    if share.revoked_at is not None:
        return SHARE_REVOKED
    if segment is not None and segment != share.path_token:
        return SHARE_WRONG_INSTANCE
    if inst is None or inst.key != share.key or inst.path_token != share.path_token:
        return SHARE_ENDED
    if inst.phase is not Phase.READY:
        return SHARE_EXPIRED if inst.phase in (Phase.EXPIRING, Phase.EXPIRED) else SHARE_ENDED
    if now >= share.expires_at or inst.expires_at is None or now >= inst.expires_at:
        return SHARE_EXPIRED
    return None


def good_until(share: Share, inst: Instance) -> datetime:
    """When the access a share gives ends: its own expiry or the UI's, whichever is first."""
    return min(share.expires_at, inst.expires_at or share.expires_at)
