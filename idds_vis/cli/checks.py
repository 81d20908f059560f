"""What the commands check before anything is recorded: the artefact source and the task name.

A local path is made absolute here, in the directory the command runs in (the agent has its own
working directory), and must exist; an unsupported scheme is refused now rather than when the
agent first tries to stage it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from idds_vis.domain.messages import MAX_TASK_ID_CHARS
from idds_vis.staging.errors import UnsupportedSource
from idds_vis.staging.sources import LocalSource, parse_source

MAX_TASK_NAME = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_source(text: str) -> str:
    """The source as the agent should get it; ``ValueError`` with a one-line reason if unusable."""
    try:
        parsed = parse_source(text)
    except UnsupportedSource as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(parsed, LocalSource):
        return text.strip()
    path = Path(os.path.normpath(Path.cwd() / parsed.path))
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if not (path.is_dir() or path.is_file()):
        raise ValueError(f"{path} is neither a directory nor a file")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ValueError(f"{path} is not readable")
    return str(path)


class SourceType(click.ParamType):  # type: ignore[type-arg]
    name = "source"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return checked_source(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TaskNameType(click.ParamType):  # type: ignore[type-arg]
    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        if not text:
            self.fail("the task name is empty", param, ctx)
        if len(text) > MAX_TASK_NAME or _CONTROL.search(text):
            self.fail(f"the task name must be one line of at most {MAX_TASK_NAME} characters",
                      param, ctx)  # fmt: skip
        return text


class TaskIdType(click.ParamType):  # type: ignore[type-arg]
    """A task id as messages accept one: one line, at most 256 characters, trimmed."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        if not text:
            self.fail("the task id is empty", param, ctx)
        if len(text) > MAX_TASK_ID_CHARS or _CONTROL.search(text):
            self.fail(f"the task id must be one line of at most {MAX_TASK_ID_CHARS} characters",
                      param, ctx)  # fmt: skip
        return text


SOURCE = SourceType()
TASK_ID = TaskIdType()
TASK_NAME = TaskNameType()
