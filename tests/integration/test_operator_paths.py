"""The operator's paths (issue 19), through the real entry point (``python -m idds_vis``):
a wrong setting stops every command with ONE stderr line naming it; in JSON mode every line the
agent and ``idds-vis web`` write is JSON, from the first to the shutdown note saying the UIs keep
running and who ends them; a second agent on one SQLite ledger is refused; a busy port is one
line too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

from idds_vis.deploy.local_processes import find_ui_processes
from idds_vis.runtime.config import Settings
from tests.mlflow_data import make_file_store

CLI = [sys.executable, "-m", "idds_vis"]
GUARD = 120.0  # a hang guard, not a timing assertion
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "80"}


def cli(*args: str | Path, timeout: float = GUARD) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)  # fmt: skip


def only_error(done: subprocess.CompletedProcess[str], *, json_mode: bool) -> str:
    """The one stderr line of a refused start, as the log format writes it: a JSON object
    (level ERROR) for the agent and the web app in JSON mode, else ``error: ...``."""
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    if not json_mode:
        assert line.startswith("error: "), line
        return line.removeprefix("error: ")
    entry = json.loads(line)
    assert entry["level"] == "ERROR", entry
    return str(entry["message"])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("workers: many\n", "workers: must be a valid integer"),
        ('web_port: "eighty"\n', "web_port: must be a valid integer"),
        ("web_port: 99999\n", "web_port: must be less than or equal to 65535"),
        ("web_prot: 8080\n", "unknown setting web_prot (did you mean web_port?)"),
        ("workers: 4\n  oops: [\n", "not valid YAML at line 2"),
        ("log_format: text\nworkers: many\n", "workers: must be a valid integer"),
    ],
)
def test_a_wrong_setting_stops_the_agent_with_one_line_naming_it(
    tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    done = cli("--config", config, "--state-dir", tmp_path / "state", "agent")
    assert done.returncode == 2, done.stderr
    message = only_error(done, json_mode="log_format: text" not in text)
    assert message.startswith(f"config {config}: {named}"), message


@pytest.mark.parametrize(
    ("command", "json_mode"),
    [(["web"], True), (["serve-ui", "--source", "x", "--prefix", "/p", "--port", "1"], False)],
)
def test_every_command_that_reads_settings_says_the_same_in_one_line(
    tmp_path: Path, command: list[str], json_mode: bool
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("workers: many\n")
    done = cli("--config", config, "--state-dir", tmp_path / "state", *command)
    assert done.returncode == 2, done.stderr
    assert "workers: must be a valid integer" in only_error(done, json_mode=json_mode)


def test_a_missing_settings_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = cli("--config", missing, "agent")
    assert done.returncode == 2
    message = only_error(done, json_mode=True)  # the agent's logs are JSON unless told
    assert message == f"config {missing}: cannot read it: No such file or directory"


def test_a_wrong_command_line_override_is_one_line(tmp_path: Path) -> None:
    done = cli("--state-dir", tmp_path / "state", "web", "--port", "99999")
    assert done.returncode == 2, done.stderr
    message = only_error(done, json_mode=True)
    assert message == "setting web_port: must be less than or equal to 65535 (got 99999)"


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line parsed as one JSON object (an AssertionError names the first that is not)."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}\n{text[-3000:]}") from None
    return parsed


@asynccontextmanager
async def service(config: Path, workdir: Path, name: str, *args: str, until: str
                  ) -> AsyncIterator[tuple[subprocess.Popen[str], Path, Path]]:  # fmt: skip
    """Start ``idds-vis --config config <args>``; wait until stderr says ``until``."""
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    proc = subprocess.Popen([*CLI, "--config", str(config), *args], stdout=out.open("w"),
                            stderr=err.open("w"), text=True, env=ENV)  # fmt: skip
    try:
        async with asyncio.timeout(GUARD):
            while until not in err.read_text():
                assert proc.poll() is None, err.read_text()[-3000:]
                await asyncio.sleep(0.2)  # another process's output: nothing to wait on instead
        yield proc, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=GUARD)


def web_url(err: Path) -> str:
    (line,) = [e for e in json_lines(err.read_text()) if "web app on" in str(e["message"])]
    return str(line["message"]).split()[3]


async def test_json_logs_one_agent_per_sqlite_ledger_busy_port_and_the_shutdown_note(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state), "log_format": "json", "ui_stub": True, "workers": 1,
        "web_host": "127.0.0.1", "web_port": 0,
    }))  # fmt: skip
    store = tmp_path / "training"
    make_file_store(store)
    label = Settings(state_dir=state).ui_label
    try:
        async with service(config, tmp_path, "agent", "agent", until="agent running") as (
            agent, out, err,
        ):  # fmt: skip
            # A second agent on the same SQLite ledger is refused, in one JSON line.
            second = cli("--config", config, "agent")
            assert second.returncode == 1, second.stderr
            (refusal,) = json_lines(second.stderr)
            assert refusal["level"] == "ERROR"
            assert f"another agent (pid {agent.pid}) already runs on the SQLite ledger" in str(
                refusal["message"])  # fmt: skip
            assert "SQLite is for one agent" in str(refusal["message"])

            # `idds-vis web` over the same ledger takes no lock; a busy port is one JSON line.
            port = web_url(err).rsplit(":", 1)[1]
            busy = cli("--config", config, "web", "--port", port)
            assert busy.returncode == 1, busy.stderr
            last = json_lines(busy.stderr)[-1]
            assert last["message"] == (
                f"cannot serve the web app on 127.0.0.1:{port}: Address already in use"
                " (settings web_host, web_port)"
            )

            # One UI (the stand-in) becomes ready, then the agent stops: it says the UI keeps
            # running and who ends it.
            made = cli("--config", config, "request", "--task", "19", "--source", store,
                       "--wait", "--json")  # fmt: skip
            assert made.returncode == 0, made.stderr
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=GUARD) == 0, err.read_text()[-3000:]
        lines = json_lines(err.read_text()) + json_lines(out.read_text())
        messages = [str(line["message"]) for line in lines]
        assert messages[-1].startswith(
            "agent stopped; 1 UI keeps running as processes of their own on this machine: the"
            " reaper of the next agent on this ledger"
        ), messages
        assert "`idds-vis teardown --task ID` ends one now" in messages[-1]
        assert not any("Report(" in m or "{'" in m for m in messages), messages  # no reprs
        assert [p.name for p in find_ui_processes(label)] != []  # it did keep running

        # The lock went with the process: a new agent starts on that ledger.
        async with service(config, tmp_path, "again", "agent", until="agent running") as (
            again, _, err2,
        ):  # fmt: skip
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=GUARD) == 0, err2.read_text()[-3000:]
    finally:
        for ui in find_ui_processes(label):
            os.killpg(ui.pid, signal.SIGKILL)


async def test_an_agent_restarted_after_sigkill_leads_at_once(tmp_path: Path) -> None:
    """A lone agent on a SQLite ledger holds its OS lock: the leases a SIGKILLed one left are
    freed at start, so its start-up reconcile runs at once instead of after the dead agent's
    leader lease lapses (an operator's first run with the warm pool: requests in those seconds
    started cold)."""
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "log_format": "json",
                                      "ui_stub": True, "workers": 1}))  # fmt: skip
    async with service(config, tmp_path, "first", "agent", until="agent running") as (first, _, _):
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=GUARD)
    async with service(config, tmp_path, "again", "agent", until="agent running") as (
        again, _, err,
    ):  # fmt: skip
        messages = [str(line["message"]) for line in json_lines(err.read_text())]
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=GUARD) == 0, err.read_text()[-3000:]
    assert any(m.startswith("freed ") and "previous agent" in m for m in messages), messages
    assert any(m.startswith("start-up reconcile:") for m in messages), messages


async def test_web_alone_honours_log_format(tmp_path: Path) -> None:
    for log_format in ("json", "text"):
        config = tmp_path / f"{log_format}.yaml"
        config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                          "log_format": log_format, "web_port": 0}))  # fmt: skip
        async with service(config, tmp_path, log_format, "web", until="web app on") as (
            web, out, err,
        ):  # fmt: skip
            web.send_signal(signal.SIGTERM)
            assert web.wait(timeout=GUARD) == 0, err.read_text()
        text = err.read_text() + out.read_text()
        if log_format == "json":
            assert any("web app on http://" in str(e["message"]) for e in json_lines(text))
        else:
            assert " INFO idds_vis.cli: web app on http://" in text
            assert not text.lstrip().startswith("{")


def test_serve_ui_on_a_busy_port_says_so_in_one_line_before_staging(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve-ui", "--source", tmp_path / "never-staged", "--prefix", "/vis/x",
                   "--port", str(port))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: cannot serve on 127.0.0.1:{port}: Address already in use\n"
