"""A pool member's hand-over (issue 18): the agent's secret, once, and only a staged directory
of this deployer's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idds_vis.deploy import pool
from idds_vis.ui import handover as member
from idds_vis.ui.handover import Handover, Refused


def body(staged: Path | str, prefix: str = "/vis/mlflow-1-abc") -> bytes:
    return json.dumps({"staged": str(staged), "prefix": prefix}).encode()


@pytest.fixture
def instances(tmp_path: Path) -> Path:
    root = tmp_path / "instances"
    (root / "mlflow-1-abc" / "staged").mkdir(parents=True)
    return root


def test_the_agent_and_the_member_agree_on_the_protocol() -> None:
    assert (pool.HANDOVER_PATH, pool.STATE_PATH, pool.SECRET_HEADER, pool.SECRET_ENV) == (
        member.HANDOVER_PATH, member.STATE_PATH, member.SECRET_HEADER, member.SECRET_ENV
    )  # fmt: skip


def test_only_the_exact_secret_is_authentic(instances: Path) -> None:
    gate = Handover("s3cret", instances)
    assert gate.authentic([b"s3cret"])
    assert not gate.authentic([])
    assert not gate.authentic([b"s3cre"])
    assert not gate.authentic([b"s3cret", b"s3cret"])  # two headers: refused, not guessed


def test_exactly_one_hand_over_is_accepted(instances: Path) -> None:
    gate = Handover("s", instances)
    staged = (instances / "mlflow-1-abc" / "staged").resolve()
    assert gate.accept(body(staged)).staged == staged
    with pytest.raises(Refused) as second:
        gate.accept(body(staged))
    assert second.value.status == 409


def test_a_refused_hand_over_is_not_retried(instances: Path) -> None:
    gate = Handover("s", instances)
    with pytest.raises(Refused):
        gate.accept(b"not json")
    with pytest.raises(Refused) as again:
        gate.accept(body((instances / "mlflow-1-abc" / "staged").resolve()))
    assert again.value.status == 409


@pytest.mark.parametrize("where", ["outside", "symlink", "relative", "not-staged", "missing"])
def test_only_a_staged_directory_of_this_deployer_is_served(
    instances: Path, tmp_path: Path, where: str
) -> None:
    outside = tmp_path / "elsewhere" / "x" / "staged"
    outside.mkdir(parents=True)
    link = instances / "mlflow-2-def"
    link.mkdir()
    (link / "staged").symlink_to(outside)
    (instances / "mlflow-3-ghi" / "other").mkdir(parents=True)
    staged = {
        "outside": outside,
        "symlink": link / "staged",
        "relative": Path("instances/mlflow-1-abc/staged"),
        "not-staged": (instances / "mlflow-3-ghi" / "other").resolve(),
        "missing": instances / "mlflow-9-zzz" / "staged",
    }[where]
    with pytest.raises(Refused) as refused:
        Handover("s", instances).accept(body(staged))
    assert refused.value.status in (400, 403)


def test_a_bad_prefix_is_refused(instances: Path) -> None:
    staged = (instances / "mlflow-1-abc" / "staged").resolve()
    with pytest.raises(Refused) as refused:
        Handover("s", instances).accept(body(staged, prefix="/vis/../admin"))
    assert refused.value.status == 400
