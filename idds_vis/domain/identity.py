"""Who is asking, derived from verified OIDC claims the way panda-server derives it, and what
they may do to a task's visualization.

PanDA facts this mirrors (code: panda-server 1.0.x ``srvcore/panda_request.py``,
``srvcore/oidc_utils.py``, ``srvcore/CoreUtils.clean_user_id``):

- groups come from the ``groups`` claim, or ``wlcg.groups`` for a VO whose JWT profile is
  ``wlcg``; a group is matched with or without its leading ``/``;
- a token's client id is its ``aud`` when that is a known client (ID tokens), else its
  ``client_id`` claim (device-code access tokens), else its ``sub`` (client_credentials);
  a robot client id listed in the config acts for a production role, named ``robot <role>``
  when the token has no ``name``. Unlike PanDA, the role here never comes through ``aud``:
  ``aud`` names who the token is FOR, so a person's token whose audience list holds the
  robot's id (any client may ask the issuer for that audience) is still that person's. The
  role goes only to the robot's own client-credentials token: ``sub`` naming the robot, or
  ``client_id``/``azp`` naming it in a token that names no person (``robot_client``);
- the DN of a token user is its ``name`` claim with each word capitalised; a task's
  ``userName`` (its owner) is ``clean_user_id`` of that DN. So the owner check compares the
  task's ``userName`` with ``panda_user_name`` of the caller's claims.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idds_vis.domain.errors import VisError

GROUPS_CLAIM = {"default": "groups", "wlcg": "wlcg.groups"}


@dataclass(frozen=True)
class Identity:
    """A verified caller. ``user`` is the PanDA user name (what a task's ``userName`` holds)."""

    user: str
    subject: str
    groups: frozenset[str] = field(default_factory=frozenset)
    production: bool = False
    client_id: str | None = None
    email: str | None = None

    def in_any(self, groups: Iterable[str]) -> bool:
        return any(normal_group(g) in self.groups for g in groups)

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "subject": self.subject,
            "groups": sorted(self.groups),
            "production": self.production,
            "client_id": self.client_id,
        }


def normal_group(group: str) -> str:
    """``/atlas/production`` and ``atlas/production`` name one group (PanDA accepts both)."""
    return group.strip().strip("/")


def clean_user_id(dn: str) -> str:
    """panda-server's ``CoreUtils.clean_user_id``: the compact user name PanDA stores as a
    task's ``userName``, from a DN or from a token's name."""
    username = re.sub(r"/(DC|O|OU|C|L)=[^/]+", "", dn)
    username = re.sub(r"/CN=[0-9]+", "", username)
    username = re.sub(r" [0-9]+", "", username)
    username = re.sub(r"_[0-9]+", "", username)
    for proxy in ("/CN=proxy", "/CN=limited proxy", "limited proxy"):
        username = username.replace(proxy, "")
    username = re.sub(r"/CN=Robot:[^/]+", "", username)
    username = re.sub(r"/CN=nickname:[^/]+", "", username)
    two = re.match(r".*/CN=([^/]+)/CN=([^/]+)", username)
    username = two.group(2) if two else username.replace("/CN=", "")
    if username.lower().find("/email") > 0:
        username = username[: username.lower().find("/email")]
    limited = re.match(r".*(limited.*proxy).*", username)
    if limited:
        username = limited.group(1)
    for char in "()'":
        username = username.replace(char, "")
    without_email = re.sub(r" [a-z][\w\.-]+@[\w\.-]+(?:\.\w+)+", "", username).strip()
    if " " in without_email:
        username = without_email
    return username


def token_dn(claims: Mapping[str, Any]) -> str:
    """The DN panda-server makes up for a token user (``name`` words capitalised), or ``sub``."""
    name = claims.get("name")
    if not name:
        return str(claims.get("sub", ""))
    dn = " ".join(t[:1].upper() + t[1:].lower() for t in str(name).split())
    if claims.get("preferred_username"):
        dn += f"/CN=nickname:{claims['preferred_username']}"
    return dn


def panda_user_name(claims: Mapping[str, Any]) -> str:
    return clean_user_id(token_dn(claims)) or str(claims.get("sub", ""))


def client_id_of(claims: Mapping[str, Any], known_clients: Collection[str]) -> str | None:
    """PanDA's order: a known ``aud``, the ``client_id`` claim, a known ``sub``; ``azp`` (the
    OIDC "authorized party") when none of them names a client."""
    audiences = claims.get("aud")
    for aud in [audiences] if isinstance(audiences, str) else list(audiences or []):
        if aud in known_clients:
            return str(aud)
    if claims.get("client_id"):
        return str(claims["client_id"])
    if claims.get("sub") in known_clients:
        return str(claims["sub"])
    return str(claims["azp"]) if claims.get("azp") else None


# Claims that name a person: a token carrying one was issued to a user, whatever client got it.
_PERSON_CLAIMS = ("name", "given_name", "family_name", "email")
# Keycloak names a client's service account "service-account-<client id>".
_SERVICE_ACCOUNT = "service-account-"


def robot_client(claims: Mapping[str, Any], robot_clients: Collection[str]) -> str | None:
    """The configured robot whose own client-credentials token this is, else None.

    ``sub`` naming a robot: INDIGO IAM's client-credentials tokens (``sub`` = client id).
    ``client_id`` or ``azp`` naming one: Keycloak's and others' (``sub`` is the service
    account's id), only when no claim names a person: a user's token obtained through the
    robot's client (device code, authorization code) names the user and is the user's.
    Never ``aud``: it says whom the token is for, not who holds it.
    """
    robots = set(robot_clients)
    if not robots:
        return None
    sub = claims.get("sub")
    if isinstance(sub, str) and sub in robots:
        return sub
    if any(claims.get(c) for c in _PERSON_CLAIMS):
        return None
    username = claims.get("preferred_username")
    for claim in ("client_id", "azp"):
        client = claims.get(claim)
        if not isinstance(client, str) or client not in robots:
            continue
        if username and username != f"{_SERVICE_ACCOUNT}{client}":
            return None  # a user's name: not the client's own service account
        return client
    return None


def identity_from_claims(
    claims: Mapping[str, Any],
    *,
    jwt_profile: str = "default",
    robot_clients: Collection[str] = (),
    production_groups: Collection[str] = (),
    known_clients: Collection[str] = (),
) -> Identity:
    """The caller a verified token names. A listed robot's own client-credentials token acts
    for the production role (``robot_client``); so does a member of a production group."""
    raw = claims.get(GROUPS_CLAIM.get(jwt_profile, "groups"))
    if isinstance(raw, str):
        raw = raw.split(",") if "," in raw else raw.split()
    groups = frozenset(normal_group(str(g)) for g in (raw or []) if str(g).strip())
    robot = robot_client(claims, robot_clients)
    # The client id is informational (PanDA's order); the role never follows from it.
    client = robot or client_id_of(claims, set(known_clients) | set(robot_clients))
    production = robot is not None or any(normal_group(g) in groups for g in production_groups)
    # panda-server names a robot without a name claim "robot <role>".
    user = f"robot {robot}" if robot and not claims.get("name") else panda_user_name(claims)
    email = claims.get("email")
    return Identity(
        user=user,
        subject=str(claims.get("sub", "")),
        groups=groups,
        production=production,
        client_id=client,
        email=str(email) if email else None,
    )


def may_change(identity: Identity, owner: str | None, tool_groups: Collection[str]) -> bool:
    """Start, extend and stop: the task's owner, a member of the tool's groups, production."""
    if identity.production:
        return True
    if owner is not None and owner == identity.user:
        return True
    return identity.in_any(tool_groups)


def refusal(identity: Identity, owner: str | None, task_id: str, tool: str) -> str:
    """Why ``may_change`` said no, in words the person can act on."""
    whose = f"{owner}'s" if owner else "another user's"
    return (
        f"{identity.user} may not change the {tool} visualization of task {task_id}: it is "
        f"{whose} task, and you are neither in a group allowed to manage {tool} UIs nor in "
        "the production role"
    )


class Forbidden(VisError):
    """The caller is known but may not do this (HTTP 403)."""
