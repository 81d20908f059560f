"""Abuse: the production role must not be reachable by a person's token.

Before the fix a user token whose ``aud`` list held the robot's client id was taken for the
robot (PanDA's "a known aud is the client id"): it stopped another user's UI and skipped the
per-user quotas. Here the verified claims a hostile user can obtain are turned into an
identity the way the web app does (``AuthConfig.identity``); the robot's own
client-credentials tokens (IAM's and Keycloak's shapes) keep the role.
"""

from __future__ import annotations

from typing import Any

import pytest

from idds_vis.api.auth.config import AuthConfig
from idds_vis.domain.identity import identity_from_claims, may_change

ROBOT = "idds-robot"
JANE = {"sub": "u-jane", "name": "jane doe", "preferred_username": "jdoe",
        "email": "jane@example.org"}  # fmt: skip


def _who(claims: dict[str, Any]) -> Any:
    return identity_from_claims(claims, robot_clients=[ROBOT], known_clients=["idds-vis", ROBOT])


@pytest.mark.parametrize(
    "claims",
    [
        {**JANE, "aud": [ROBOT, "idds-vis"]},  # the reported hole: a list of audiences
        {**JANE, "aud": ["https://idds-vis.example.org", ROBOT]},
        {**JANE, "aud": ROBOT},  # a single audience naming the robot
        {**JANE, "aud": "idds-vis", "azp": ROBOT},  # a user signed in through the robot client
        {**JANE, "aud": "idds-vis", "client_id": ROBOT},  # device code through the robot client
        {"sub": "u-mallory", "preferred_username": "mallory", "aud": "idds-vis",
         "client_id": ROBOT},
    ],
    ids=["aud-list", "aud-list-url", "aud-single", "azp-with-person", "client_id-with-person",
         "client_id-with-username"],
)
def test_a_person_token_naming_the_robot_is_not_the_robot(claims: dict[str, Any]) -> None:
    who = _who(claims)
    assert not who.production, f"{claims} was given the production role"
    assert not who.user.startswith("robot ")
    # ... so it may not change another user's UI (the stop of the report).
    assert not may_change(who, "John Smith", ())


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": ROBOT, "client_id": ROBOT, "aud": "idds-vis"},  # INDIGO IAM client credentials
        {"sub": ROBOT, "aud": "idds-vis"},  # sub alone
        {"sub": "5f1c-uuid", "azp": ROBOT, "preferred_username": f"service-account-{ROBOT}",
         "aud": "idds-vis"},  # Keycloak's service account
        {"sub": "5f1c-uuid", "client_id": ROBOT, "aud": "idds-vis"},
    ],
    ids=["iam", "sub-only", "keycloak", "client_id-only"],
)
def test_the_robots_own_client_credentials_token_has_the_role(claims: dict[str, Any]) -> None:
    who = _who(claims)
    assert who.production
    assert who.user == f"robot {ROBOT}"


def test_the_web_app_config_gives_no_role_through_aud() -> None:
    """The path the app really takes: its own client id is a known client, the robot too."""

    class _Oidc:
        client_id = "idds-vis"

    config = AuthConfig(oidc=None, robot_clients=frozenset({ROBOT}))
    config.oidc = _Oidc()  # type: ignore[assignment]
    assert not config.identity({**JANE, "aud": [ROBOT, "idds-vis"]}).production
    assert config.identity({"sub": ROBOT, "aud": "idds-vis"}).production
