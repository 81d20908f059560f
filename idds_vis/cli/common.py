"""What the commands share: settings from options, running a coroutine, printing results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from idds_vis.agent.service import Agent
from idds_vis.cli import exits
from idds_vis.domain.errors import InvalidRequest, NotFound, VisError
from idds_vis.domain.expiry import parse_duration
from idds_vis.domain.models import Instance
from idds_vis.runtime.config import Settings, load_settings
from idds_vis.runtime.logs import configure_logging
from idds_vis.runtime.wiring import build_agent

T = TypeVar("T")
stderr = Console(stderr=True)


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except VisError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def settings_from(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.find_root().obj
    settings: Settings = obj["settings"]
    return settings


def make_settings(
    config: Path | None, state_dir: Path | None, database_url: str | None
) -> Settings:
    return load_settings(config).replace(state_dir=state_dir, database_url=database_url)


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's coroutine; a VisError becomes a one-line message and its exit code
    (``exits``: 3 for a record that does not exist, 1 for any other refusal)."""
    try:
        return asyncio.run(coro_fn())
    except KeyboardInterrupt:
        # What was written stays written: a request made before Ctrl-C goes on.
        note("interrupted (what was already recorded stays; `idds-vis list` shows it)")
        sys.exit(exits.INTERRUPTED)
    except NotFound as exc:
        _error(exc)
        sys.exit(exits.NOT_FOUND)
    except VisError as exc:
        _error(exc)
        sys.exit(exits.FAILED)


def _error(exc: Exception) -> None:
    stderr.print(f"[red]error:[/red] {markup_escape(str(exc))}", highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """A one-line remark on stderr (stdout stays the result: a table, TSV or JSON)."""
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True))


COLUMNS = ("task", "tool", "phase", "url", "expires at", "reason")


def _cells(inst: Instance) -> tuple[str, ...]:
    return (
        inst.task_id,
        inst.tool,
        inst.phase.value,
        inst.url or "",
        inst.expires_at.isoformat(timespec="seconds") if inst.expires_at else "",
        inst.reason or "",
    )


def instances_table(instances: list[Instance]) -> Table:
    """A table whose URLs are never cut or folded: it is as wide as its widest row needs, and
    the terminal wraps what does not fit (a URL stays one piece to copy or click)."""
    table = Table(*COLUMNS[:3], box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("url", no_wrap=True, overflow="ignore")
    table.add_column("expires at", no_wrap=True, overflow="ignore")
    table.add_column("reason", max_width=60)  # a long reason wraps within its column
    for inst in instances:
        table.add_row(*(markup_escape(cell) for cell in _cells(inst)))
    return table


def instances_tsv(instances: list[Instance]) -> str:
    """One line per record, tab-separated, with a header: for pipes (``cut -f4`` is the URL)."""

    def clean(cell: str) -> str:
        return " ".join(cell.split("\t")).replace("\n", " ").replace("\r", " ")

    lines = ["\t".join(c.replace(" ", "_") for c in COLUMNS)]
    lines += ["\t".join(clean(cell) for cell in _cells(inst)) for inst in instances]
    return "\n".join(lines)


def print_instances(instances: list[Instance], as_json: bool, *, one: bool = False) -> None:
    """The command's result on stdout: JSON (``--json``; one object when ``one``), a table on
    a terminal, TSV in a pipe. Nothing is ever truncated."""
    if as_json:
        emit_json(instances[0].as_json() if one else [inst.as_json() for inst in instances])
    elif not sys.stdout.isatty():
        click.echo(instances_tsv(instances))
    else:
        table = instances_table(instances)
        wanted = Console(width=100_000).measure(table).maximum  # its width with nothing cut
        console = Console(highlight=False)
        console.width = max(console.width, wanted)
        console.print(table, crop=False)


def setup_logging(verbose: bool, secrets: Iterable[str] = (), log_format: str = "text") -> None:
    """Text for the interactive commands; the agent and web app use ``log_format`` (JSON)."""
    if log_format not in ("json", "text"):
        raise InvalidRequest(f"log_format must be 'json' or 'text', not {log_format!r}")
    configure_logging(
        level=logging.DEBUG if verbose else logging.INFO,
        json_lines=log_format == "json",
        secrets=secrets,
    )


@contextlib.asynccontextmanager
async def ledger_session(settings: Settings) -> AsyncIterator[Agent]:
    """An agent that is not started: the commands use its ledger-backed operations only."""
    service = build_agent(settings)
    await service.ledger.open()
    try:
        yield service
    finally:
        await service.ledger.close()
