"""Logging: one JSON object per line, with the request a line concerns, and no secrets.

Every record gets the fields bound in ``idds_vis.agent.logctx`` (task id, request id, phase).
Secrets are removed from the finished line, whatever put them there (a message, an argument, an
exception's text, a traceback): the values of configured secrets (and their JSON-escaped
forms), bearer tokens, and passwords in URLs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, NoReturn, TextIO

from pythonjsonlogger.json import JsonFormatter

from idds_vis.agent import logctx

REDACTED = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(://[^/\s:@]*:)[^@\s/]+(@)"),  # user:password@host
    re.compile(
        r"(?i)((?:passcode|password|secret|token|aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
)
MIN_SECRET_CHARS = 4  # shorter "secrets" would redact ordinary words


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        for form in {secret, json.dumps(secret)[1:-1], secret.strip()}:
            if len(form) >= MIN_SECRET_CHARS and form not in self.values:
                self.values.append(form)
        self.values.sort(key=len, reverse=True)  # a secret containing another goes first

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + REDACTED + (m.group(2) if m.lastindex == 2 else ""), text
            )
        return text


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in logctx.current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingJsonFormatter(JsonFormatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class RedactingTextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in logctx.current().items())
        return self.redact(f"{text} [{fields}]" if fields else text)


def configure_logging(
    *, level: int = logging.INFO, json_lines: bool = True, secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:  # fmt: skip
    """Replace the root handlers with one that writes redacted lines to ``stream`` (stderr)."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    formatter: Any = (
        RedactingJsonFormatter(redact) if json_lines else RedactingTextFormatter(redact)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings go through the same handler (in JSON mode a bare warning on stderr
    # would be a line that is not JSON).
    logging.captureWarnings(True)
    # A library's logging.config.fileConfig/dictConfig (alembic's, mlflow's) disables every
    # logger that exists at that moment, ours included: ours are never to be silenced.
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("idds_vis") and isinstance(logger, logging.Logger):
            logger.disabled = False
    # A thread's uncaught exception (a library's worker, one of ours) through the same
    # handler too: Python's default prints a bare, unredacted traceback on stderr.
    threading.excepthook = _log_thread_exception
    return redact


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    where = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("idds_vis.threads").error("uncaught exception in %s", where,
                                                exc_info=args.exc_value)  # fmt: skip


START = logging.getLogger("idds_vis.start")


def json_lines_on() -> bool:
    """Whether the logs are JSON lines now (``configure_logging(json_lines=True)``)."""
    return any(
        isinstance(h.formatter, RedactingJsonFormatter) for h in logging.getLogger().handlers
    )


def _redactor() -> Redactor:
    for handler in logging.getLogger().handlers:
        redact = getattr(handler.formatter, "redact", None)
        if isinstance(redact, Redactor):
            return redact
    return Redactor()


def one_line(text: str) -> str:
    return " ".join(text.split())


def report_error(message: str) -> None:
    """A command's error as ONE line on stderr: a JSON object when the logs are JSON (so every
    line stays JSON), else ``error: <message>``; secrets redacted either way."""
    message = one_line(message)
    if json_lines_on():
        START.error(message)
    else:
        sys.stderr.write(f"error: {_redactor()(message)}\n")
        sys.stderr.flush()


def fail(message: str, code: int) -> NoReturn:
    """``report_error`` and exit with ``code``."""
    report_error(message)
    raise SystemExit(code)
