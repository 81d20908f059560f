"""Logs: one JSON object per line, the request on every line that concerns it, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from idds_vis.domain.errors import SourceUnreachable
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from idds_vis.runtime.logs import REDACTED, Redactor, configure_logging
from tests.fakes import FakeDeployer, FakeStager, make_agent, wait_for_phase

SECRET = "hunter2-S3cr3t/key+x"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload-part.signature-part"


class LeakyStager(FakeStager):
    """A library that puts credentials into its error text, as some do."""

    async def stage(self, source: str, dest: Path):  # type: ignore[no-untyped-def]
        if source.startswith("s3:"):
            raise SourceUnreachable(
                f"S3 said 403 for aws_secret_access_key={SECRET} with "
                f"Authorization: Bearer {TOKEN} at https://me:{SECRET}@s3.example/b"
            )
        return await super().stage(source, dest)


@pytest.fixture
def captured(tmp_path: Path) -> Iterator[io.StringIO]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(stomp_password=SECRET, extra={})
    secrets = settings.secrets() + Settings(idds_oidc_token_file=str(token_file)).secrets()
    assert secrets == [SECRET, TOKEN]
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    # DEBUG: the pipeline says its intermediate phases (staging, ...) at DEBUG only.
    configure_logging(level=logging.DEBUG, json_lines=True, secrets=secrets, stream=stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


async def test_every_line_is_json_with_the_request_and_without_secrets(tmp_path, captured):
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    agent = make_agent(ledger, FakeDeployer(tmp_path / "ui"), stager=LeakyStager())
    good_events, leaky_events = agent.events.subscribe(), agent.events.subscribe()
    await agent.start()
    try:
        await agent.submit(VisRequest("good-1", source="archive.tgz"))
        await agent.submit(VisRequest("leaky-2", source="s3://bucket/key"))
        async with asyncio.timeout(30):
            await wait_for_phase(agent, good_events, "good-1", {Phase.READY})
            failed = await wait_for_phase(agent, leaky_events, "leaky-2", {Phase.FAILED})
        logging.getLogger("idds_vis.test").error("outside any request: token %s", TOKEN)
    finally:
        await agent.stop()
        await ledger.close()

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert SECRET not in text and TOKEN not in text and "hunter2" not in text
    about = [line for line in lines if line.get("task_id") == "leaky-2"]
    assert {line["phase"] for line in about} >= {"staging", "failed"}
    assert all(line["request_id"].startswith(failed.name + "#") for line in about)
    leak = next(line for line in about if line["phase"] == "failed")
    assert REDACTED in leak["message"] and "me:" + REDACTED + "@" in leak["message"]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["message"] == f"outside any request: token {REDACTED}" for line in lines)
    assert all("task_id" not in line for line in lines if "outside" in line["message"])


def test_redactor_finds_secrets_however_they_are_written():
    redact = Redactor(['pa"ss\\word!', "abc"])  # too short to redact safely: ignored
    assert redact('{"x": "pa\\"ss\\\\word!"}') == '{"x": "' + REDACTED + '"}'
    assert redact("abc stays") == "abc stays"
    assert redact("stomp://u:topsecret@h:61613") == "stomp://u:" + REDACTED + "@h:61613"
    assert redact("passcode: 12345678") == "passcode: " + REDACTED


def test_a_threads_uncaught_exception_is_one_redacted_json_line() -> None:
    import threading

    out = io.StringIO()
    saved = threading.excepthook
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(json_lines=True, secrets=[SECRET], stream=out)

        def fail() -> None:
            raise ValueError(f"could not reach https://me:{SECRET}@s3.example/b")

        worker = threading.Thread(target=fail, name="leaky-worker")
        worker.start()
        worker.join()
    finally:
        threading.excepthook = saved
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["level"] == "ERROR" and "leaky-worker" in line["message"]
    assert "ValueError" in line["exc_info"] and SECRET not in lines[0]

