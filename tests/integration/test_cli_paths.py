"""The command-line author's paths (issue 19): through the real ``idds-vis`` entry point on a
real SQLite state dir; records the agent would have moved are moved here with the real ledger.

Exit codes (docs/reference/cli.md): 0 done or already so, 1 refused or failed, 2 usage,
3 not found, 4 --wait timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from idds_vis.cli.main import cli
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.messages import Trigger, request_from_trigger
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.integration.conftest import ui_processes

CLI = [sys.executable, "-m", "idds_vis"]
URL = "http://127.0.0.1:24567/vis/mlflow-0123456789abcdef0123456789abcdef/"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def artefacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory ``run/`` in the working directory, so a relative ``--source run`` names it."""
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    monkeypatch.chdir(work)
    return work / "run"


def idds_vis(state: Path, *args: str) -> Result:
    """One command in this process, through the real click group ``main`` runs."""
    return CliRunner().invoke(cli, ["--state-dir", str(state), *args], catch_exceptions=False)


def ledger_of(state: Path) -> SqlLedger:
    return SqlLedger(f"sqlite+aiosqlite:///{state / 'ledger.db'}")


NOW = datetime.now(UTC)


async def _move(state: Path, task_id: str, *phases: Phase, reason: str | None = None) -> None:
    """Take a requested record along ``phases`` as an agent would (claim, then transitions)."""
    ledger = ledger_of(state)
    await ledger.open()
    try:
        key = InstanceKey(task_id)
        claimed = await ledger.claim(NOW, "test-agent")
        assert claimed is not None and claimed.key == key
        for phase in phases:
            extra: dict[str, object] = {}
            if phase is Phase.READY:
                extra = {"url": URL, "expires_at": NOW + timedelta(hours=1)}
            if phase is Phase.FAILED:
                extra = {"reason": reason}
            await ledger.transition(key, phase, NOW, **extra)  # type: ignore[arg-type]
    finally:
        await ledger.close()


def move(state: Path, task_id: str, *phases: Phase, reason: str | None = None) -> None:
    asyncio.run(_move(state, task_id, *phases, reason=reason))


TO_READY = (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING, Phase.READY)
TO_EXPIRED = (*TO_READY, Phase.EXPIRING, Phase.EXPIRED)


def requested(state: Path, task_id: str, *more: str) -> dict[str, object]:
    done = idds_vis(state, "request", "--task", task_id, "--source", "run", "--claim-wait", "0",
                    "--json", *more)  # fmt: skip
    assert done.exit_code == 0, done.output
    record: dict[str, object] = json.loads(done.stdout)
    return record


# -- request: what is stored, and what is refused before anything is ----------------------------


def test_a_relative_source_is_stored_absolute_and_the_task_name_with_it(
    state: Path, artefacts: Path
) -> None:
    record = requested(state, "4711", "--task-name", "user.jdoe.train/")
    assert record["source"] == str(artefacts)
    assert record["task_name"] == "user.jdoe.train/"

    async def by_name() -> list[str]:
        ledger = ledger_of(state)
        await ledger.open()
        try:  # what the permalink /t/<name>/<tool> looks records up by
            return [i.task_id for i in await ledger.find(task_name="user.jdoe.train/")]
        finally:
            await ledger.close()

    assert asyncio.run(by_name()) == ["4711"]


def test_asking_again_names_a_record_made_without_a_name(state: Path, artefacts: Path) -> None:
    requested(state, "4712")
    again = requested(state, "4712", "--task-name", "user.jdoe.later")
    assert again["task_name"] == "user.jdoe.later"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--source", "missing.tgz"], "missing.tgz does not exist"),
        (["--source", "ftp://host/a.tgz"], "unsupported artefact source scheme 'ftp'"),
        (["--source", "run", "--tool", "tensorboard"], "'tensorboard' is not 'mlflow'"),
        (["--source", "run", "--task-name", " "], "the task name is empty"),
        (["--source", "run", "--task", " "], "the task id is empty"),
        (["--source", "run", "--task", "47\n11"], "the task id must be one line"),
        (["--source", "run", "--ttl", "soon"], "cannot read duration 'soon'"),
    ],
)
def test_bad_input_is_refused_before_anything_is_recorded(
    state: Path, artefacts: Path, args: list[str], says: str
) -> None:
    done = idds_vis(state, "request", "--task", "4713", *args)
    assert done.exit_code == 2, done.output
    assert says in done.stderr
    assert "Traceback" not in done.output
    assert json.loads(idds_vis(state, "list", "--json").stdout) == []


def test_a_missing_path_is_named_absolute(state: Path, artefacts: Path) -> None:
    done = idds_vis(state, "request", "--task", "4713", "--source", "missing.tgz")
    assert f"{artefacts.parent / 'missing.tgz'} does not exist" in done.stderr


def test_unknown_tools_are_refused_by_every_request() -> None:
    with pytest.raises(InvalidRequest, match="unknown visualization tool 'tensorboard'"):
        VisRequest("4711", source="/data", tool="tensorboard")
    # A broker message naming it: the intake rejects the message (its resolver's VisError).
    trigger = Trigger(kind="vis_request", task_id="4711", workload_id=None, request_id=None,
                      transform_id=None, status="", source="/data", ttl=None,
                      tool="tensorboard")  # fmt: skip
    with pytest.raises(InvalidRequest, match="idds-vis serves mlflow"):
        request_from_trigger(trigger)


def test_an_idds_work_for_an_unknown_tool_fails_at_authoring_time() -> None:
    from idds_vis.idds.works import VisualizationWork

    with pytest.raises(InvalidRequest, match="unknown visualization tool 'tensorboard'"):
        VisualizationWork(tool="tensorboard")


def test_no_agent_is_said_at_once_with_no_claim_wait(state: Path, artefacts: Path) -> None:
    done = idds_vis(state, "request", "--task", "4714", "--source", "run", "--claim-wait", "0")
    assert done.exit_code == 0, done.output
    assert "no agent has picked task 4714 (mlflow) up yet" in done.stderr
    assert "is `idds-vis agent` running" in done.stderr


def test_a_claim_ends_the_wait_for_an_agent(state: Path, artefacts: Path) -> None:
    """The command says it waits; the test then claims the record as an agent would: the
    command ends without the warning (the wait is observed, not timed)."""
    idds_vis(state, "list")  # creates the ledger
    proc = subprocess.Popen(
        [*CLI, "--state-dir", str(state), "request", "--task", "4715", "--source", "run",
         "--claim-wait", "600", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "waiting up to 600 s for an agent to pick task 4715 (mlflow) up" in first, first
        move(state, "4715")  # claimed: resolving
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["phase"] == "resolving"
    assert "no agent" not in err


def test_ctrl_c_while_waiting_is_one_line_and_keeps_the_request(
    state: Path, artefacts: Path
) -> None:
    proc = subprocess.Popen(
        [*CLI, "--state-dir", str(state), "request", "--task", "4716", "--source", "run",
         "--claim-wait", "0", "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()  # printed before --wait starts waiting
        assert "no agent has picked task 4716 (mlflow) up yet" in said, said
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    listed = json.loads(idds_vis(state, "list", "--json").stdout)
    assert [(i["task_id"], i["phase"]) for i in listed] == [("4716", "requested")]


def step(state: Path, task_id: str, phase: Phase) -> None:
    """One transition of a claimed record, as the agent makes it."""

    async def go() -> None:
        ledger = ledger_of(state)
        await ledger.open()
        try:
            extra: dict[str, object] = {}
            if phase is Phase.READY:
                extra = {"url": URL, "expires_at": NOW + timedelta(hours=1)}
            await ledger.transition(InstanceKey(task_id), phase, NOW, **extra)  # type: ignore[arg-type]
        finally:
            await ledger.close()

    asyncio.run(go())


def test_request_wait_says_each_step_on_stderr_and_prints_the_result_on_stdout(
    state: Path, artefacts: Path
) -> None:
    """Each step the record takes while --wait waits is one line on stderr, as it happens
    (each is read before the next transition: observed, not timed); stdout is the JSON."""
    proc = subprocess.Popen(
        [*CLI, "--state-dir", str(state), "request", "--task", "4718", "--source", "run",
         "--claim-wait", "0", "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    said: queue.Queue[str] = queue.Queue()  # stderr's lines, read as they come
    stderr = proc.stderr

    def read() -> None:
        for line in stderr:
            said.put(line)

    threading.Thread(target=read, daemon=True).start()

    def next_line() -> str:  # the bound only turns a missing line into a failure, not a hang
        return said.get(timeout=120).strip()

    try:
        assert "no agent has picked task 4718 (mlflow) up yet" in next_line()
        move(state, "4718")  # claimed: resolving
        assert next_line() == "task 4718 (mlflow): resolving…"
        step(state, "4718", Phase.STAGING)
        assert next_line() == "task 4718 (mlflow): staging…"
        for phase in (Phase.DEPLOYING, Phase.STARTING, Phase.READY):
            step(state, "4718", phase)
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert json.loads(out)["phase"] == "ready"


def test_list_can_show_some_tasks_only(state: Path, artefacts: Path) -> None:
    for task in ("5001", "5002", "5003"):
        requested(state, task)
    listed = idds_vis(state, "list", "--task", "5001", "--task", "5003", "--json")
    assert [i["task_id"] for i in json.loads(listed.stdout)] == ["5001", "5003"]
    assert json.loads(idds_vis(state, "list", "--task", "none", "--json").stdout) == []


# -- after a failure or an expiry: relaunch ----------------------------------------------------


@pytest.mark.parametrize("ended", [Phase.FAILED, Phase.EXPIRED])
def test_request_for_an_ended_record_is_refused_and_points_to_relaunch(
    state: Path, artefacts: Path, ended: Phase
) -> None:
    requested(state, "4720")
    move(state, "4720", *(TO_EXPIRED if ended is Phase.EXPIRED else (Phase.FAILED,)),
         reason="no MLflow data in the artefacts")  # fmt: skip
    again = idds_vis(state, "request", "--task", "4720", "--source", "run", "--json")
    assert again.exit_code == 1, again.output  # the same for failed and expired
    assert json.loads(again.stdout)["phase"] == ended.value
    assert "idds-vis relaunch --task 4720" in again.stderr


def test_request_for_a_record_being_torn_down_points_to_relaunch(
    state: Path, artefacts: Path
) -> None:
    requested(state, "4727")
    move(state, "4727", *TO_READY, Phase.EXPIRING)
    again = idds_vis(state, "request", "--task", "4727", "--source", "run")
    assert again.exit_code == 1, again.output
    assert "is being torn down (expiring)" in again.stderr
    assert "idds-vis relaunch --task 4727" in again.stderr


def test_relaunch_of_a_record_being_torn_down_waits_for_it_to_end(
    state: Path, artefacts: Path
) -> None:
    requested(state, "4728")
    move(state, "4728", *TO_READY, Phase.EXPIRING)
    proc = subprocess.Popen(
        [*CLI, "--state-dir", str(state), "relaunch", "--task", "4728", "--claim-wait", "0",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()
        assert "task 4728 (mlflow) is being torn down; waiting up to 10m" in said, said
        asyncio.run(_expire(state, "4728"))  # the reaper's last step
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, err
    record = json.loads(out)
    assert (record["phase"], record["attempt"]) == ("requested", 2)


async def _expire(state: Path, task_id: str) -> None:
    ledger = ledger_of(state)
    await ledger.open()
    try:
        await ledger.transition(InstanceKey(task_id), Phase.EXPIRED, NOW)
    finally:
        await ledger.close()


def test_relaunch_a_failed_record_with_a_new_source_and_ttl(
    state: Path, artefacts: Path, tmp_path: Path
) -> None:
    first = requested(state, "4721", "--task-name", "user.jdoe.t")
    move(state, "4721", Phase.FAILED, reason="no MLflow data in the artefacts")
    (artefacts.parent / "fixed").mkdir()
    done = idds_vis(state, "relaunch", "--task", "4721", "--source", "fixed", "--ttl", "2h",
                    "--claim-wait", "0", "--json")  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert (record["phase"], record["attempt"], record["reason"]) == ("requested", 2, None)
    assert record["source"] == str(artefacts.parent / "fixed")
    assert record["ttl_seconds"] == 7200
    assert record["task_name"] == "user.jdoe.t" and record["name"] == first["name"]
    assert "no agent has picked task 4721 (mlflow) up yet" in done.stderr


def test_relaunch_keeps_the_origin_and_the_source_unless_given(
    state: Path, artefacts: Path
) -> None:
    async def message_record_that_failed() -> None:
        ledger = ledger_of(state)
        await ledger.open()
        try:
            await ledger.submit(VisRequest("4722", source="s3://bucket/run/", origin="panda",
                                           ttl=timedelta(hours=3)), NOW)  # fmt: skip
        finally:
            await ledger.close()

    async def stored() -> tuple[str, str | None, list[tuple[str, str]]]:
        ledger = ledger_of(state)
        await ledger.open()
        try:
            inst = await ledger.get(InstanceKey("4722"))
            assert inst is not None
            trail = [(a.actor, a.action) for a in await ledger.actions(InstanceKey("4722"))]
            return inst.origin, inst.path_token, trail
        finally:
            await ledger.close()

    idds_vis(state, "list")
    asyncio.run(message_record_that_failed())
    move(state, "4722", Phase.FAILED, reason="staging failed")
    _, first_path, _ = asyncio.run(stored())
    done = idds_vis(state, "relaunch", "--task", "4722", "--claim-wait", "0", "--json")
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert (record["source"], record["ttl_seconds"]) == ("s3://bucket/run/", 3 * 3600)
    origin, path, trail = asyncio.run(stored())
    # A message's source stays a message's source (staged under the source policy).
    assert origin == "panda"
    assert path != first_path  # a new launch, a new path: a link to the last one leads nowhere
    assert trail[-1] == ("cli", "relaunch")


def test_relaunch_with_a_new_ttl_gives_a_new_path(state: Path, artefacts: Path) -> None:
    requested(state, "4726")
    move(state, "4726", Phase.FAILED, reason="staging failed")

    async def path() -> str | None:
        ledger = ledger_of(state)
        await ledger.open()
        try:
            inst = await ledger.get(InstanceKey("4726"))
            assert inst is not None
            return inst.path_token
        finally:
            await ledger.close()

    before = asyncio.run(path())
    done = idds_vis(state, "relaunch", "--task", "4726", "--ttl", "2h", "--claim-wait", "0")
    assert done.exit_code == 0, done.output
    assert asyncio.run(path()) != before


def test_relaunch_of_a_live_record_changes_nothing_and_of_none_is_not_found(
    state: Path, artefacts: Path
) -> None:
    requested(state, "4723")
    live = idds_vis(state, "relaunch", "--task", "4723", "--json")
    assert live.exit_code == 0, live.output
    assert json.loads(live.stdout)["attempt"] == 1
    assert "is requested: nothing to relaunch" in live.stderr
    missing = idds_vis(state, "relaunch", "--task", "nope")
    assert missing.exit_code == 3, missing.output
    assert "no visualization for task nope (mlflow)" in missing.stderr


def test_teardown_of_an_ended_record_says_so(state: Path, artefacts: Path) -> None:
    requested(state, "4724")
    move(state, "4724", Phase.FAILED, reason="no MLflow data in the artefacts")
    done = idds_vis(state, "teardown", "--task", "4724", "--json")
    assert done.exit_code == 0, done.output
    assert "already ended (failed: no MLflow data in the artefacts): nothing to stop" in (
        done.stderr)  # fmt: skip
    assert "idds-vis relaunch --task 4724" in done.stderr
    gone = idds_vis(state, "teardown", "--task", "nope")
    assert gone.exit_code == 3 and "no visualization for task nope" in gone.stderr


def test_teardown_wait_that_runs_out_has_its_own_code(state: Path, artefacts: Path) -> None:
    requested(state, "4725")  # no agent: nothing will reap it
    done = idds_vis(state, "teardown", "--task", "4725", "--timeout", "0.1s")
    assert done.exit_code == 4, done.output


# -- extend, list, help -------------------------------------------------------------------------


def test_extend_past_the_maximum_says_what_the_maximum_is(state: Path, artefacts: Path) -> None:
    requested(state, "4730")
    move(state, "4730", *TO_READY)  # expires an hour from NOW; max_ttl is 7d by default
    done = idds_vis(state, "extend", "--task", "4730", "--by", "30d")
    assert done.exit_code == 1, done.output
    line = done.stderr.strip()
    assert "\n" not in line
    assert "the maximum lifetime is 7d from now" in line
    assert re.search(r"can be extended by at most 6d2\dh\d*m?", line), line
    ok = idds_vis(state, "extend", "--task", "4730", "--by", "2h", "--json")
    assert ok.exit_code == 0, ok.output


def test_extend_before_ready_says_when_the_lifetime_starts(state: Path, artefacts: Path) -> None:
    requested(state, "4732")
    done = idds_vis(state, "extend", "--task", "4732", "--by", "2h")
    assert done.exit_code == 1
    assert "task 4732 (mlflow) is not ready yet (requested)" in done.stderr


def test_extend_of_an_ended_record_points_to_relaunch(state: Path, artefacts: Path) -> None:
    requested(state, "4731")
    move(state, "4731", *TO_EXPIRED)
    done = idds_vis(state, "extend", "--task", "4731", "--by", "2h")
    assert done.exit_code == 1
    assert "has ended (expired)" in done.stderr and "idds-vis relaunch" in done.stderr
    assert idds_vis(state, "extend", "--task", "nope", "--by", "2h").exit_code == 3


@pytest.fixture
def ready_record(state: Path, artefacts: Path) -> Path:
    requested(state, "4740")
    move(state, "4740", *TO_READY)
    return state


def test_list_in_a_pipe_is_tsv_with_the_whole_url(ready_record: Path) -> None:
    done = subprocess.run([*CLI, "--state-dir", str(ready_record), "list"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split("\t") == ["task", "tool", "phase", "url", "expires_at", "reason"]
    assert row.split("\t")[:4] == ["4740", "mlflow", "ready", URL]


def _on_a_terminal(args: list[str], columns: int = 80) -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**env, "TERM": "xterm"})  # fmt: skip
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_list_on_an_80_column_terminal_keeps_the_url_whole(ready_record: Path) -> None:
    shown = _on_a_terminal([*CLI, "--state-dir", str(ready_record), "list"])
    assert URL in shown, shown
    assert "…" not in shown


def test_help_shows_defaults_and_exit_codes() -> None:
    for command in ("request", "relaunch", "teardown", "extend", "list"):
        shown = CliRunner().invoke(cli, [command, "--help"], terminal_width=100).output
        assert "Exit codes:" in shown, command
        assert re.search(r"^ +3 +no visualization for that task and tool$", shown, re.M), command
    request_help = CliRunner().invoke(cli, ["request", "--help"], terminal_width=100).output
    assert "[default: mlflow]" in request_help and "[default: 10m]" in request_help
    assert "[default: 5.0" in request_help  # --claim-wait
    relaunch_help = CliRunner().invoke(cli, ["relaunch", "--help"], terminal_width=100).output
    assert "--source" in relaunch_help and "--ttl" in relaunch_help


# -- the way forward, with a real agent -----------------------------------------------------------


@pytest.mark.mlflow
def test_a_failed_ui_relaunched_with_good_artefacts_comes_up(
    tmp_path: Path, demo_archive: Path
) -> None:
    state = tmp_path / "state"
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not an archive")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "--state-dir", str(state), *args], capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    agent = subprocess.Popen([*CLI, "--state-dir", str(state), "agent"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        bad = run("request", "--task", "4750", "--source", str(junk), "--wait", "--json")
        assert bad.returncode == 1, bad.stderr
        assert json.loads(bad.stdout)["phase"] == "failed"
        again = run("relaunch", "--task", "4750", "--source", str(demo_archive), "--ttl", "1h",
                    "--claim-wait", "120", "--wait", "--json")  # fmt: skip
        assert again.returncode == 0, again.stderr
        ready = json.loads(again.stdout)
        assert (ready["phase"], ready["attempt"]) == ("ready", 2)
        assert "no agent" not in again.stderr
        gone = run("teardown", "--task", "4750", "--json")
        assert gone.returncode == 0 and json.loads(gone.stdout)["phase"] == "expired"
        assert ready["name"] not in ui_processes().values()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
