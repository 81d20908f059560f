"""The permalink: built by ``with_visualization`` for workflow authors, read back by the agent."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.permalink import Permalink, parse_permalink, permalink_url
from idds_vis.panda import with_visualization

BASE = "https://idds-vis.example.org"
PARAMS = {"taskName": "user.jdoe.mnist-train/", "vo": "atlas", "nEventsPerJob": 10}


def test_adds_the_permalink_and_push_status_changes_without_touching_the_input() -> None:
    given_params = dict(PARAMS)
    out = with_visualization(given_params, base_url=BASE)
    assert given_params == PARAMS  # not mutated
    assert out is not given_params
    assert out["visualization"] == f"{BASE}/t/user.jdoe.mnist-train%2F/mlflow?ttl=24h"
    assert out["pushStatusChanges"] is True
    assert {k: v for k, v in out.items() if k in PARAMS} == PARAMS


def test_the_entry_reads_back_as_what_was_asked() -> None:
    out = with_visualization(PARAMS, ttl="90m", base_url=BASE + "/")
    assert parse_permalink(out["visualization"]) == Permalink(
        "user.jdoe.mnist-train/", "mlflow", timedelta(minutes=90)
    )


def test_base_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDDS_VIS_URL", "http://vis.local:8080/prefix/")
    out = with_visualization(PARAMS, ttl=timedelta(hours=2))
    assert out["visualization"] == (
        "http://vis.local:8080/prefix/t/user.jdoe.mnist-train%2F/mlflow?ttl=2h"
    )
    # An explicit argument wins over the environment.
    assert with_visualization(PARAMS, base_url=BASE)["visualization"].startswith(BASE + "/t/")


def test_no_base_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDDS_VIS_URL", raising=False)
    with pytest.raises(InvalidRequest, match="IDDS_VIS_URL"):
        with_visualization(PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "params", "match"),
    [
        ({"tool": "tensorboard"}, PARAMS, "unknown visualization tool 'tensorboard'"),
        ({"ttl": "forever"}, PARAMS, "cannot read duration 'forever'"),
        ({"ttl": "0s"}, PARAMS, "must be positive"),
        ({"base_url": "idds-vis.example.org"}, PARAMS, "absolute http"),
        ({"base_url": "ftp://x.org"}, PARAMS, "absolute http"),
        ({"base_url": BASE + "/?a=1"}, PARAMS, "query or fragment"),
        ({}, {"vo": "atlas"}, "no taskName"),
        ({}, {"taskName": "  "}, "no taskName"),
    ],
)
def test_bad_arguments_are_refused_at_submission(
    kwargs: dict[str, str], params: dict[str, object], match: str
) -> None:
    kwargs.setdefault("base_url", BASE)
    with pytest.raises(InvalidRequest, match=match):
        with_visualization(params, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}/t/user.jdoe.x/mlflow", Permalink("user.jdoe.x", "mlflow", None)),
        (f"{BASE}/t/user.jdoe.x/mlflow?ttl=1d", Permalink("user.jdoe.x", "mlflow", timedelta(1))),
        # A name quoted with quote()'s default safe "/" still reads back.
        (f"{BASE}/t/user.jdoe.x//mlflow?ttl=45s",
         Permalink("user.jdoe.x/", "mlflow", timedelta(seconds=45))),
        (f"{BASE}/base/t/a%20b%3Fc/mlflow", Permalink("a b?c", "mlflow", None)),
        ("/t/task.1/mlflow", Permalink("task.1", "mlflow", None)),
    ],
)  # fmt: skip
def test_parse_permalink(url: str, expected: Permalink) -> None:
    assert parse_permalink(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"{BASE}/vis/mlflow-x-12345678/", "not an idds-vis permalink"),
        (f"{BASE}/t/mlflow", "not an idds-vis permalink"),
        (f"{BASE}/t//mlflow", "not an idds-vis permalink"),
        ("ftp://x.org/t/a/mlflow", "not an idds-vis permalink"),
        (f"{BASE}/t/a/tensorboard", "unknown visualization tool"),
        (f"{BASE}/t/a/mlflow?ttl=soon", "cannot read duration"),
    ],
)
def test_parse_permalink_refuses_what_is_not_one(url: str, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse_permalink(url)


@given(st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_any_task_name_round_trips(name: str) -> None:
    assert parse_permalink(permalink_url(BASE, name, "mlflow", "24h")).task_name == name


def test_importing_it_loads_nothing_outside_the_domain_and_the_standard_library() -> None:
    probe = (
        "import sys, json; before = set(sys.modules); import idds_vis.panda; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True))
    outside = [
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names
        and m != "idds_vis"
        and not m.startswith(("idds_vis.domain", "idds_vis.panda"))
    ]
    assert "idds_vis.panda.visualization" in loaded
    assert outside == []


@pytest.mark.parametrize("name", ["t", "t/", "t/t", "a/t/b"])
def test_names_that_look_like_the_path_mark_read_back(name: str) -> None:
    url = permalink_url("https://vis.example/t/base", name, "mlflow", "2h")
    assert parse_permalink(url).task_name == name
