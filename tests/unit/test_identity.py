"""Identities from verified claims, the way panda-server derives them, and who may act."""

from __future__ import annotations

import pytest

from idds_vis.domain.identity import (
    Identity,
    clean_user_id,
    identity_from_claims,
    may_change,
    panda_user_name,
)


@pytest.mark.parametrize(
    ("dn", "user"),
    [
        # What panda-server stores as a task's userName (CoreUtils.clean_user_id).
        ("/DC=ch/DC=cern/OU=Users/CN=jdoe/CN=123456/CN=Jane Doe", "Jane Doe"),
        ("/DC=ch/DC=cern/OU=Users/CN=jdoe/CN=123456/CN=Jane Doe/CN=proxy", "Jane Doe"),
        ("Jane Doe/CN=nickname:jdoe", "Jane Doe"),
        ("Jane Doe 2", "Jane Doe"),
        ("Jane O'Doe (CERN) jane.doe@example.org", "Jane ODoe CERN"),
    ],
)
def test_clean_user_id_matches_panda(dn: str, user: str) -> None:
    assert clean_user_id(dn) == user


def test_a_token_user_is_named_like_panda_names_the_task_owner() -> None:
    claims = {"sub": "u1", "name": "jane DOE", "preferred_username": "jdoe"}
    assert panda_user_name(claims) == "Jane Doe"
    assert panda_user_name({"sub": "u1"}) == "u1"  # no name: the subject


def test_groups_come_from_groups_or_from_wlcg_groups() -> None:
    claims = {"sub": "u1", "name": "Jane Doe", "groups": ["atlas", "/atlas/ml"],
              "wlcg.groups": ["/cms"]}  # fmt: skip
    assert identity_from_claims(claims).groups == {"atlas", "atlas/ml"}
    assert identity_from_claims(claims, jwt_profile="wlcg").groups == {"cms"}
    assert identity_from_claims({"sub": "u1"}).groups == frozenset()


def test_a_listed_robot_acts_for_the_production_role() -> None:
    robot = {"sub": "idds-robot", "client_id": "idds-robot", "aud": "svc"}
    who = identity_from_claims(robot, robot_clients=["idds-robot"])
    assert (who.user, who.production, who.client_id) == ("robot idds-robot", True, "idds-robot")
    stranger = identity_from_claims({**robot, "client_id": "other", "sub": "other"},
                                    robot_clients=["idds-robot"])  # fmt: skip
    assert not stranger.production
    # client_credentials tokens of some issuers carry the client only in sub
    only_sub = identity_from_claims({"sub": "idds-robot", "aud": "svc"},
                                    robot_clients=["idds-robot"])  # fmt: skip
    assert only_sub.production


def test_production_group_members_have_the_role() -> None:
    who = identity_from_claims({"sub": "u", "name": "P", "groups": ["/atlas/production"]},
                               production_groups=["atlas/production"])  # fmt: skip
    assert who.production


def test_may_change_owner_groups_production_and_nobody_else() -> None:
    jane = Identity("Jane Doe", "u1", frozenset({"atlas"}))
    john = Identity("John Smith", "u2", frozenset({"atlas"}))
    helper = Identity("Helen Help", "u3", frozenset({"atlas/ml-support"}))
    robot = Identity("robot r", "r", production=True)
    groups = ["/atlas/ml-support"]
    assert may_change(jane, "Jane Doe", groups)
    assert not may_change(john, "Jane Doe", groups)
    assert may_change(helper, "Jane Doe", groups)
    assert may_change(robot, "Jane Doe", groups)
    assert not may_change(john, None, groups)  # an unknown owner is nobody's
