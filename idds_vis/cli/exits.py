"""The exit codes of ``idds-vis`` (documented in docs/reference/cli.md; scripts rely on them)."""

from __future__ import annotations

import click

OK = 0  # done, or already in the state asked for (a live UI asked for again, an ended one ended)
FAILED = 1  # refused (over a limit, a record that ended and needs `relaunch`) or the UI failed
USAGE = 2  # bad options or arguments (click's own code): nothing was recorded
NOT_FOUND = 3  # no record for that task and tool
TIMED_OUT = 4  # --wait ran out of time; the request stays recorded and goes on
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

TABLE: tuple[tuple[int, str], ...] = (
    (OK, "done, or already in the state asked for"),
    (FAILED, "refused, or the visualization failed"),
    (USAGE, "usage error: a bad option or argument (nothing was recorded)"),
    (NOT_FOUND, "no visualization for that task and tool"),
    (TIMED_OUT, "--wait ran out of time (the request stays and goes on)"),
    (INTERRUPTED, "interrupted by Ctrl-C (what was recorded stays)"),
)


class TimedOut(click.ClickException):
    exit_code = TIMED_OUT


def epilog() -> str:
    """The exit-code table for ``--help`` (``\\b`` keeps click from rewrapping it)."""
    rows = "\n".join(f"  {code:<3}  {meaning}" for code, meaning in TABLE)
    return f"\b\nExit codes:\n{rows}"
