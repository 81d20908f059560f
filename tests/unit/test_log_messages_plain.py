"""Issue 19: log messages carry no Python reprs (``'name'`` quoted, ``b'...'``): values are
written as they are. A static check of every logging call in the package: no ``%r`` in its
format and no ``!r`` in an f-string given to it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import idds_vis
from idds_vis.api.routes import permalink

PACKAGE = Path(idds_vis.__file__).resolve().parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _reprs(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS and node.args):  # fmt: skip
            continue
        for arg in node.args[:2]:  # log.log(level, msg, ...) has it second
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "%r" in arg.value:
                found.append(node.lineno)
            if isinstance(arg, ast.JoinedStr) and any(
                isinstance(v, ast.FormattedValue) and v.conversion == ord("r") for v in arg.values
            ):
                found.append(node.lineno)
    return found


def test_no_logging_call_writes_a_repr() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _reprs(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}


async def test_a_refused_permalink_start_logs_the_name_as_it_is(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert permalink.log.name == "idds_vis.api.routes.permalink"
    # An earlier test's logging.config (a library's dictConfig) may have disabled it.
    monkeypatch.setattr(permalink.log, "disabled", False)
    monkeypatch.setattr(permalink.log, "propagate", True)
    with caplog.at_level(logging.INFO, logger=permalink.log.name):
        permalink.log_refused("user.jdoe.train/\nforged line", "mlflow", "PanDA has no task")
    (record,) = caplog.records
    assert record.getMessage() == (
        "permalink start of user.jdoe.train/ forged line (mlflow) refused: PanDA has no task"
    )
