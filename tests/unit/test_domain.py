import itertools
from datetime import UTC, datetime, timedelta

import pytest

from idds_vis.domain.errors import InvalidRequest, InvalidTransition
from idds_vis.domain.expiry import check_ttl, expiry_after, format_duration, parse_duration
from idds_vis.domain.naming import instance_name, is_dns1123_label
from idds_vis.domain.phases import HAPPY_PATH, Phase, can_transition, check_transition


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("60s", 60), ("2d", 172800), ("45", 45)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(parse_duration(text))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5m", "0s", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_duration(text)


def test_ttl_cap_and_expiry() -> None:
    check_ttl(timedelta(hours=1), timedelta(hours=2))
    with pytest.raises(InvalidRequest, match="over the maximum"):
        check_ttl(timedelta(hours=3), timedelta(hours=2))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry_after(at, timedelta(hours=24)) == datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "task_id", ["1", "12345678", "user.x/y", "user.x.y", "A" * 200, "---", "user.jdoe.HPO_2024/"]
)
def test_names_are_dns1123(task_id: str) -> None:
    name = instance_name(task_id, "mlflow")
    assert is_dns1123_label(name), name
    assert name.startswith("mlflow-")


def test_names_differ_for_ids_with_the_same_slug() -> None:
    assert instance_name("user.x/y", "mlflow") != instance_name("user.x.y", "mlflow")
    assert instance_name("42", "mlflow") == instance_name("42", "mlflow")
    assert instance_name("42", "mlflow") != instance_name("42", "tb")


def test_bad_names_rejected() -> None:
    with pytest.raises(InvalidRequest):
        instance_name("", "mlflow")
    with pytest.raises(InvalidRequest):
        instance_name("1", "ML Flow")


def test_happy_path_is_allowed_step_by_step() -> None:
    for current, target in itertools.pairwise(HAPPY_PATH):
        check_transition(current, target)


def test_disallowed_transitions() -> None:
    assert not can_transition(Phase.REQUESTED, Phase.READY)
    assert not can_transition(Phase.EXPIRED, Phase.READY)
    with pytest.raises(InvalidTransition, match="expired to staging"):
        check_transition(Phase.EXPIRED, Phase.STAGING)
    for phase in Phase:
        if phase not in (Phase.EXPIRED, Phase.FAILED, Phase.EXPIRING):
            assert can_transition(phase, Phase.FAILED)
