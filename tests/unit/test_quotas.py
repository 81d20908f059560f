"""The quota policy: what starts now, what waits, in which order, and what is reported."""

from __future__ import annotations

from datetime import timedelta

import pytest

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.quotas import (
    Ask,
    Holding,
    Limits,
    admissible,
    blocked,
    capacity,
    charged_group,
    check_ask,
)

H = timedelta(hours=1)


def held(user: str, group: str | None = None, hours: float = 1) -> Holding:
    return Holding(user, group, H * hours)


def test_within_every_limit_everything_starts_in_order() -> None:
    asks = [Ask(3, "a", None, H), Ask(1, "b", None, H), Ask(2, "c", None, H)]
    assert admissible(asks, [], Limits(per_user=1, total=5)) == [1, 2, 3]


def test_the_per_user_limit_holds_back_that_user_only() -> None:
    limits = Limits(per_user=1)
    asks = [Ask(1, "jane", None, H), Ask(2, "john", None, H)]
    assert admissible(asks, [held("jane")], limits) == [2]
    assert blocked(asks[0], [held("jane")], limits) == (
        "jane has 1 live visualization (the limit per user is 1)"
    )


def test_a_full_total_stops_the_whole_queue() -> None:
    asks = [Ask(1, "jane", None, H), Ask(2, "john", None, H)]
    assert admissible(asks, [held("x")], Limits(total=2)) == [1]
    assert admissible(asks, [held("x"), held("y")], Limits(total=2)) == []


def test_a_later_ask_never_overtakes_an_earlier_one_of_the_same_user_or_group() -> None:
    # jane's 3 h ask does not fit her 4 h cap next to the 2 h she holds; her later 1 h ask
    # would, but must wait behind it. john is not held back by jane.
    limits = Limits(user_ttl=4 * H)
    asks = [Ask(1, "jane", None, 3 * H), Ask(2, "jane", None, H), Ask(3, "john", None, H)]
    assert admissible(asks, [held("jane", hours=2)], limits) == [3]
    grouped = Limits(per_group={"atlas/ml": 1})
    asks = [Ask(1, "jane", "atlas/ml", H), Ask(2, "john", "atlas/ml", H)]
    assert admissible(asks, [held("x", "atlas/ml")], grouped) == []
    assert admissible(asks, [], grouped) == [1]


def test_production_is_exempt_from_all_but_the_total() -> None:
    limits = Limits(per_user=0, user_ttl=H, total=2)
    asks = [Ask(1, "robot r", None, 10 * H, exempt=True), Ask(2, "robot r", None, H, True)]
    assert admissible(asks, [held("robot r")], limits) == [1]


def test_the_charged_group_is_the_first_limited_one_in_configuration_order() -> None:
    limits = Limits(per_group={"atlas/ml": 2, "/atlas": 5})
    assert charged_group(["/atlas", "atlas/ml"], limits) == "atlas/ml"
    assert charged_group(["atlas"], limits) == "atlas"
    assert charged_group(["cms"], limits) is None


def test_an_ask_that_could_never_start_is_refused_at_once() -> None:
    with pytest.raises(InvalidRequest, match="over the 3h of lifetime one user may hold"):
        check_ask(Ask(1, "jane", None, 4 * H), Limits(user_ttl=3 * H))
    check_ask(Ask(1, "robot", None, 4 * H, exempt=True), Limits(user_ttl=3 * H))


def test_capacity_reports_used_and_free_slots() -> None:
    limits = Limits(per_user=2, per_group={"atlas/ml": 3, "cms": 1}, total=10, user_ttl=5 * H)
    holdings = [held("jane", "atlas/ml", 2), held("john", "atlas/ml"), held("x", None)]
    report = capacity(holdings, limits, user="jane", groups=["/atlas/ml"], waiting=4)
    assert report["total"] == {"used": 3, "limit": 10, "free": 7}
    assert report["user"] == {"name": "jane", "used": 1, "limit": 2, "free": 1}
    assert report["user_ttl"] == {"used_seconds": 7200, "limit_seconds": 18000,
                                  "free_seconds": 10800}  # fmt: skip
    assert report["groups"] == {"atlas/ml": {"used": 2, "limit": 3, "free": 1}}
    assert report["waiting"] == 4
    anonymous = capacity(holdings, Limits())
    assert anonymous["total"] == {"used": 3, "limit": None, "free": None}
    assert "user" not in anonymous
