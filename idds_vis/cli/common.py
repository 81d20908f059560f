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
from rich.console import Console
from rich.table import Table

from idds_vis.agent.service import Agent
from idds_vis.domain.errors import InvalidRequest, VisError
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
    """Run a command's coroutine; a VisError becomes a one-line message and exit code 1."""
    try:
        return asyncio.run(coro_fn())
    except VisError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True))


def instances_table(instances: list[Instance]) -> Table:
    table = Table("task", "tool", "phase", "url", "expires at", "reason")
    for inst in instances:
        table.add_row(
            inst.task_id,
            inst.tool,
            inst.phase.value,
            inst.url or "",
            inst.expires_at.isoformat(timespec="seconds") if inst.expires_at else "",
            inst.reason or "",
        )
    return table


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
