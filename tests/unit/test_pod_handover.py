"""A standby pod's hand-over (issue 18, ui/pod_member.py): the secret, exactly one hand-over,
and a body checked before anything is staged."""

from __future__ import annotations

import json

import pytest

from idds_vis.ui.handover import Refused
from idds_vis.ui.pod_member import PodHandover

GOOD = {"instance": "ui-1", "prefix": "/vis/abc", "source": "https://bigpanda.example/x",
        "env": {}}  # fmt: skip


def body(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_only_the_pods_secret_is_authentic() -> None:
    handover = PodHandover("s3cret")
    assert handover.authentic([b"s3cret"])
    assert not handover.authentic([b"other"]) and not handover.authentic([])
    assert not handover.authentic([b"s3cret", b"s3cret"])


def test_exactly_one_hand_over_even_after_a_refused_one() -> None:
    handover = PodHandover("s")
    got = handover.accept_pod(body())
    assert (got.prefix, got.source, got.env, got.guard) == (
        "/vis/abc", GOOD["source"], GOOD["env"], None)  # fmt: skip
    with pytest.raises(Refused) as again:
        handover.accept_pod(body())
    assert again.value.status == 409
    refused_first = PodHandover("s")
    with pytest.raises(Refused):
        refused_first.accept_pod(b"not json")
    with pytest.raises(Refused) as after:
        refused_first.accept_pod(body())
    assert after.value.status == 409


def test_a_staged_directory_is_never_accepted() -> None:
    with pytest.raises(Refused):
        PodHandover("s").accept(json.dumps({"staged": "/tmp/x", "prefix": "/vis/a"}).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"prefix": "/vis/../etc"},
        {"prefix": 3},
        {"source": ""},
        {"env": {"A": 1}},
        {"env": {"IDDS_VIS_HTTP_TOKEN": "t"}},  # a standby pod takes no credentials
        {"env": ["x"]},
        {"guard": "yes"},
        {"guard": True, "allow_private_addresses": "10.0.0.0/8"},
        {"guard": True, "allow_private_addresses": ["not an address/99"]},
        {"proxy_secret": ""},
    ],
)
def test_a_malformed_hand_over_is_refused_with_400(changes: dict[str, object]) -> None:
    with pytest.raises(Refused) as refused:
        PodHandover("s").accept_pod(body(**changes))
    assert refused.value.status == 400


def test_a_message_source_is_staged_under_the_address_guard() -> None:
    got = PodHandover("s").accept_pod(body(guard=True, allow_private_addresses=["10.1.0.0/16"]))
    assert got.guard is not None
