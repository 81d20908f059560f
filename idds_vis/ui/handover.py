"""The pool member's side of the hand-over (issue 18), shared by the MLflow member
(``ui/pool_member.py``) and the stand-in (``ui/stub.py``). Standard library only.

The agent (``deploy/pool.py``) gives an idle member its instance with one call:
``POST /.idds-vis/handover`` carrying the member's secret in ``X-Idds-Vis-Pool-Secret`` and
``{"staged": "<instances dir>/<name>/staged", "prefix": "/vis/<name>"}``. The member checks the
secret (constant time), takes the first hand-over and no other, and accepts only a staged
directory directly under the instances directory it was started for, with no symbolic link
on the way: the staged data is what the agent's stager produced under its source policy and
address guard, and a member never reaches out for a source itself.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from idds_vis.ui.readonly_gate import check_prefix

# deploy/pool.py's names (the deploy layer may not import the UI's; a unit test compares).
HANDOVER_PATH = "/.idds-vis/handover"
STATE_PATH = "/.idds-vis/pool"
SECRET_HEADER = "X-Idds-Vis-Pool-Secret"
SECRET_ENV = "IDDS_VIS_POOL_SECRET"
MAX_BODY = 64 * 1024
# The prefix an idle member's MLflow app is built with; requests under the instance's prefix
# are passed to it under this one (ui/pool_member.py's PrefixSwap).
MEMBER_PREFIX = "/vis/idds-vis-pool-member"


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Assignment:
    staged: Path
    prefix: str


class Handover:
    def __init__(self, secret: str, instances: Path) -> None:
        if not secret:
            raise ValueError("a pool member needs its hand-over secret")
        self._secret = secret.encode()
        self.instances = instances.resolve()
        self.taken = False

    def authentic(self, sent: list[bytes]) -> bool:
        return len(sent) == 1 and hmac.compare_digest(sent[0], self._secret)

    def take_once(self, body: bytes) -> None:
        """The single-use rule every hand-over obeys: only the first is looked at (409 after),
        marked taken before any check, so a refused one is not retried either."""
        if self.taken:
            raise Refused(409, "this UI was handed its instance already")
        self.taken = True
        if len(body) > MAX_BODY:
            raise Refused(413, "hand-over body too large")

    def accept(self, body: bytes) -> Assignment:
        """The first well-formed hand-over; Refused with an HTTP status otherwise."""
        self.take_once(body)
        try:
            data = json.loads(body)
            staged, prefix = data["staged"], data["prefix"]
        except (ValueError, TypeError, KeyError):
            raise Refused(400, "the hand-over names no staged directory and prefix") from None
        if not isinstance(staged, str) or not isinstance(prefix, str):
            raise Refused(400, "the hand-over names no staged directory and prefix")
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        path = Path(staged)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise Refused(400, "the staged directory does not exist") from None
        if (
            not path.is_absolute()
            or real != path
            or real.parent.parent != self.instances
            or real.name != "staged"
            or not real.is_dir()
        ):
            raise Refused(403, "the staged directory is not one of this deployer's")
        return Assignment(real, prefix)
