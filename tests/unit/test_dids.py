"""Rucio DIDs (DESIGN §6: the scope of user.*/group.* names is their first two dot-fields, and a
trailing '/' goes) and the s3:// and rucio:// source forms."""

from __future__ import annotations

import re

import pytest

from idds_vis.domain.dids import Did, implied_scope, parse_did
from idds_vis.staging import UnsupportedSource
from idds_vis.staging.sources import RucioSource, S3Source, describe, parse_source


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        ("user.jdoe.hpo.123_out", "user.jdoe"),
        ("group.phys-higgs.scan.4", "group.phys-higgs"),
        ("mc23_13p6TeV.801234.Py8.merge.AOD", "mc23_13p6TeV"),
        ("data24_13p6TeV.00475321.physics_Main", "data24_13p6TeV"),
        ("userland.x.y", "userland"),  # only the field 'user' counts, not a prefix of it
        ("single", "single"),
    ],
)
def test_implied_scope(name: str, scope: str) -> None:
    assert implied_scope(name) == scope


@pytest.mark.parametrize(
    ("text", "did"),
    [
        ("user.jdoe:user.jdoe.hpo.123_out/", Did("user.jdoe", "user.jdoe.hpo.123_out")),
        ("user.jdoe.hpo.123_out/", Did("user.jdoe", "user.jdoe.hpo.123_out")),
        ("  group.phys.x.log  ", Did("group.phys", "group.phys.x.log")),
        ("mc23_13p6TeV:mc23_13p6TeV.1.AOD", Did("mc23_13p6TeV", "mc23_13p6TeV.1.AOD")),
        ("panda:panda.0912.log//", Did("panda", "panda.0912.log")),
    ],
)
def test_parse_did(text: str, did: Did) -> None:
    assert parse_did(text) == did
    assert str(parse_did(text)) == f"{did.scope}:{did.name}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "has no name"),
        ("user.jdoe:/", "has no name"),
        ("a:b:c", "more than one ':'"),
        ("user.jdoe:user.jdoe.*", "'*'"),
        ("user.jdoe:a b", "' '"),
        (".hidden", "has no scope"),
        (":name", "has no scope"),
    ],
)
def test_bad_dids_are_refused_with_a_reason(text: str, reason: str) -> None:
    expected = re.escape(f"contains {reason}" if reason[0] == "'" else reason)
    with pytest.raises(ValueError, match=expected):
        parse_did(text)


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        (
            "rucio://user.jdoe:user.jdoe.hpo.1_out/",
            RucioSource(Did("user.jdoe", "user.jdoe.hpo.1_out")),
        ),
        ("rucio:user.jdoe.hpo.1_out", RucioSource(Did("user.jdoe", "user.jdoe.hpo.1_out"))),
        ("RUCIO://mc23:mc23.x", RucioSource(Did("mc23", "mc23.x"))),
        ("s3://artefacts/tasks/42/metrics.tgz", S3Source("artefacts", "tasks/42/metrics.tgz")),
        ("s3://artefacts/tasks/42/", S3Source("artefacts", "tasks/42/")),
        ("s3://artefacts", S3Source("artefacts", "")),
        ("s3://artefacts/odd?key#x", S3Source("artefacts", "odd?key#x")),  # keys taken verbatim
    ],
)
def test_source_forms(source: str, parsed: object) -> None:
    assert parse_source(source) == parsed
    assert describe(parse_source(source)).startswith(("rucio://", "s3://"))


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("s3:///key", "must be s3://bucket/key-or-prefix"),
        ("s3://user:pw@bucket/key", "must be s3://bucket/key-or-prefix"),
        ("rucio://a:b:c", "more than one"),
        ("rucio://", "has no name"),
    ],
)
def test_bad_source_forms(source: str, reason: str) -> None:
    with pytest.raises(UnsupportedSource, match=reason) as caught:
        parse_source(source)
    assert "pw" not in str(caught.value)
