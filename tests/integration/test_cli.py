"""The ``idds-vis`` command as scripts use it: real processes, real UIs, real ledger."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from idds_vis.domain.phases import HAPPY_PATH
from tests.integration.conftest import ui_processes

pytestmark = pytest.mark.mlflow
CLI = [sys.executable, "-m", "idds_vis"]


def idds_vis(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=300, check=check,
    )  # fmt: skip


def test_demo_json_prints_each_phase_and_exits_after_expired() -> None:
    out = subprocess.run(
        [*CLI, "demo", "--ttl", "3s", "--json"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["phase"] for line in lines] == [p.value for p in HAPPY_PATH]
    assert len({line["task_id"] for line in lines}) == 1
    ready = next(line for line in lines if line["phase"] == "ready")
    assert ready["url"].startswith("http://127.0.0.1:")
    assert re.search(r"/vis/mlflow-[0-9a-f]{32}/$", ready["url"])
    assert ready["expires_at"].endswith("+00:00")
    assert all("url" not in line for line in lines if line["phase"] != "ready")
    assert not [n for n in ui_processes().values() if n.startswith("mlflow-demo-")]


def test_agent_and_commands_share_the_ledger(tmp_path: Path, demo_archive: Path) -> None:
    state = tmp_path / "state"
    agent = subprocess.Popen(
        [*CLI, "--state-dir", str(state), "agent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = idds_vis("request", "--task", "900", "--source", str(demo_archive), "--ttl", "1h",
                         "--wait", "--json", state=state)  # fmt: skip
        ready = json.loads(first.stdout)
        assert ready["phase"] == "ready", ready
        again = json.loads(
            idds_vis(
                "request", "--task", "900", "--source", str(tmp_path), "--json", state=state
            ).stdout
        )
        assert again["name"] == ready["name"] and again["source"] == ready["source"]

        extended = json.loads(idds_vis("extend", "--task", "900", "--by", "2h", "--json",
                                       state=state).stdout)  # fmt: skip
        assert extended["expires_at"] > ready["expires_at"]
        listed = json.loads(idds_vis("list", "--json", state=state).stdout)
        assert [(i["task_id"], i["phase"]) for i in listed] == [("900", "ready")]

        # A missing path is refused at request time (usage error, exit 2: issue 19).
        bad = idds_vis("request", "--task", "901", "--source", str(tmp_path / "none.tgz"),
                       "--wait", "--json", state=state, check=False)  # fmt: skip
        assert bad.returncode == 2
        assert "none.tgz does not exist" in bad.stderr

        gone = json.loads(idds_vis("teardown", "--task", "900", "--json", state=state).stdout)
        assert gone["phase"] == "expired"
        assert ready["name"] not in ui_processes().values()

        unknown = idds_vis("extend", "--task", "nope", "--by", "1h", state=state, check=False)
        assert unknown.returncode == 3 and "no visualization for task nope" in unknown.stderr
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, agent.stderr.read() if agent.stderr else ""
