"""Red team (issue 18's warm pool and standby pods): another local Unix user, a visitor, a pod.

Finding 1 — a local user's process was taken for the agent's own (agent running as root).
The local deployer finds its UIs and pool members by reading every process's environment
(``local_processes``: the label, the UI's name, the member id, the port). A non-root agent
cannot read another user's ``/proc/<pid>/environ``, but an agent running as root (as in a
container, or this test machine) can, and took what it read on trust. The label is no secret:
it is the first 12 hex digits of sha256(state dir), and the state dir is on every member's
command line (``--instances``, ``--workdir``), readable in ``ps`` by everyone; the pool
directory is listable (0755), so the member ids are too. So any local user could:

- start ``env IDDS_VIS_UI_LABEL=<label> IDDS_VIS_UI_NAME=/some/dir sleep 1d``: the reconciler
  lists it as a UI with no live record, an orphan, and ``delete_by_name('/some/dir')`` runs
  ``make_writable`` and ``rmtree`` on ``instances / '/some/dir'`` == ``/some/dir``, as root
  (``test_another_users_process_is_no_ui_and_no_orphan_to_remove``);
- start a twin of an idle member (its id, the pool's version, a port of their own): a
  restarted agent adopts the twin into the pool with the real member's secret, and the next
  request hands the twin that secret, the staged path and (behind the web app) the UI's proxy
  secret; the web app then proxies that task's visitors to the twin, which serves them what
  it likes on the web app's origin (``test_a_twin_of_an_idle_member_is_not_adopted``);
- start a twin of a claimed member: it is listed as that instance's UI
  (``test_a_twin_of_a_claimed_member_is_no_ui``).

The fix (``local_processes``): a process counts only when its real uid is the agent's; the
local deployer also refuses an instance name that is not one path component before it removes
anything (``deploy/local.py``, ``delete_by_name``).

Further findings, each with its test and fix below: 2, a cold UI's access log (the path
token) and the pool's member ids readable by every local user; 3, a standby pod's MLflow
process would keep a hand-over's staging credentials (the deployer hands none, 2c67466, and a
pod refuses any); 4, a
member taken, or stopped, by its pid alone after it died; 5, idle members of a crashed agent
left running when the pool is turned off. And what holds: another user reads no member or
proxy secret; an idle member answers 503 but to the agent; a refused hand-over spends the
member; a handed member serves its instance's prefix only; a pod planted with the standby
labels is handed nothing. (Symlinked and foreign staged directories: tests/unit/
test_handover.py.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from idds_vis.deploy import local_processes as procs
from idds_vis.deploy.local import STAND_IN_POOL_MEMBER, STAND_IN_UI, LocalProcessDeployer
from idds_vis.deploy.pool import SECRET_HEADER, STATE_PATH
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.staging.archive_stager import ArchiveStager
from tests.fakes import FakeStager
from tests.integration.conftest import demo_archive  # noqa: F401

NOBODY = 65534

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="plays another local user: needs root to start its processes"
)


class Planted:
    """Processes another local user (nobody) starts, with the environment they choose."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str]) -> int:
        proc = subprocess.Popen(
            ["/bin/sleep", "600"], env={"PATH": "/usr/bin:/bin", **env},
            user=NOBODY, group=NOBODY, cwd="/", start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append(proc)
        return proc.pid

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def planted() -> Iterator[Planted]:
    found = Planted()
    try:
        yield found
    finally:
        found.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deployer(state: Path, label: str, **kwargs: object) -> LocalProcessDeployer:
    return LocalProcessDeployer(state, label=label, ui_argv=STAND_IN_UI, poll_interval=0.05,
                                pool_argv=STAND_IN_POOL_MEMBER, pool_version="v1",
                                **kwargs)  # type: ignore[arg-type]  # fmt: skip


@needs_root
async def test_another_users_process_is_no_ui_and_no_orphan_to_remove(
    tmp_path: Path, planted: Planted
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("not the agent's to remove")
    label = f"redteam-{tmp_path.name}"
    deployer = _deployer(tmp_path / "state", label)
    planted.start({"IDDS_VIS_UI_LABEL": label, "IDDS_VIS_UI_NAME": str(precious),
                   "IDDS_VIS_UI_PORT": "1"})  # fmt: skip
    listed = await deployer.running()
    assert [ui.name for ui in listed] == []
    # What the reconciler does with a listed UI that has no live record (agent/reconciler.py).
    for ui in listed:
        await deployer.delete_by_name(ui.name)
    assert (precious / "data").read_text() == "not the agent's to remove"
    assert planted.procs[0].poll() is None  # nor is another user's process the agent's to stop


async def test_a_name_that_is_no_path_component_removes_nothing(tmp_path: Path) -> None:
    """The second line of the defence above: whatever lists a name, the deployer removes only
    ``instances/<one component>``."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("kept")
    deployer = _deployer(tmp_path / "state", f"redteam-{tmp_path.name}")
    (tmp_path / "state" / "instances").mkdir(parents=True)
    for name in (str(precious), "../../precious", "..", ".", ""):
        await deployer.delete_by_name(name)
    assert (precious / "data").read_text() == "kept"
    assert (tmp_path / "state" / "instances").is_dir()


@needs_root
async def test_a_twin_of_an_idle_member_is_not_adopted(tmp_path: Path, planted: Planted) -> None:
    state, label = tmp_path / "state", f"redteam-{tmp_path.name}"
    first = _deployer(state, label, pool_size=1)
    assert first.pool is not None
    try:
        first.pool.start()
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            await first.pool.wait_until(lambda pool: len(pool.idle) == 1)
        real = first.pool.idle[0]
        # The attacker learns the member id from the pool directory and runs a twin on a port
        # of their own; the agent then restarts without its shutdown.
        twin_port = _free_port()
        twin = planted.start({"IDDS_VIS_UI_LABEL": label, procs.MEMBER_ENV: real.id,
                              procs.VERSION_ENV: first.pool.version,
                              "IDDS_VIS_UI_PORT": str(twin_port)})  # fmt: skip
        first.pool._task.cancel()  # type: ignore[union-attr]
        again = _deployer(state, label, pool_size=1)
        assert again.pool is not None
        adopted = await asyncio.to_thread(again.pool._adopt)
        assert [(m.pid, m.port) for m in adopted] == [(real.pid, real.port)]
        assert twin not in {m.pid for m in procs.find_pool_members(label, state / "pool")}
        # The real member still answers the agent (the twin never took its place).
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                real.base("127.0.0.1") + STATE_PATH, headers={SECRET_HEADER: real.secret}
            ) as resp,
        ):
            assert resp.status == 200 and (await resp.json())["state"] == "idle"
    finally:
        await first.close()


@needs_root
def test_a_twin_of_a_claimed_member_is_no_ui(tmp_path: Path, planted: Planted) -> None:
    pool_dir, label, member = tmp_path / "pool", f"redteam-{tmp_path.name}", "ab" * 16
    (pool_dir / member).mkdir(parents=True)
    (pool_dir / member / procs.CLAIM_FILE).write_text("mlflow-7-task")
    twin = planted.start({"IDDS_VIS_UI_LABEL": label, procs.MEMBER_ENV: member,
                          "IDDS_VIS_UI_PORT": "1"})  # fmt: skip
    assert twin not in {ui.pid for ui in procs.find_ui_processes(label, pool_dir)}
    assert procs.ui_process(twin, label, pool_dir) is None


# Finding 2 — a cold UI's log was readable by every local user. The state directory is made
# as ``mkdir -p`` makes it (0755), and so were ``instances/`` and ``instances/<name>/`` (the
# stager creates them as parents of its 0700 ``staged``); ``ui.log`` and ``ui.json`` in it are
# 0644. The UI's access log (uvicorn, MLflow's log config) has every request line, the agent's
# readiness probes first: ``GET /vis/<path token>/health``. Without a web app that path is the
# UI's only capability, and the UI listens on the public host. The pool's directory likewise
# listed every member's id. Fix (deploy/local.py): the deployer keeps ``instances/`` and
# ``pool/`` 0700 (made so, or set so, before the first UI or member starts).


@pytest.fixture
def open_state() -> Iterator[Path]:
    """A state directory as an operator's ``mkdir -p`` leaves it: others may traverse it
    (pytest's own tmp_path is under a 0700 directory, which would hide the finding)."""
    top = Path(tempfile.mkdtemp(prefix="idds-vis-redteam-"))
    try:
        top.chmod(0o755)
        (top / "state").mkdir(mode=0o755)
        yield top / "state"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _read_as_nobody(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/bin/cat", str(path)], user=NOBODY, group=NOBODY, cwd="/",
                          capture_output=True, check=False, timeout=30)  # fmt: skip


def _instance(name_key: str, source: str) -> Instance:
    now = datetime.now(UTC)
    key = InstanceKey(name_key)
    return Instance(task_id=key.task_id, tool=key.tool, name=key.name, phase=Phase.DEPLOYING,
                    source=source, ttl=timedelta(hours=1), created_at=now, updated_at=now,
                    path_token=f"mlflow-{uuid.uuid4().hex}")  # fmt: skip


@needs_root
async def test_another_user_reads_no_ui_log_nor_member_directory(
    open_state: Path, planted: Planted
) -> None:
    deployer = _deployer(open_state, f"redteam-{uuid.uuid4().hex[:8]}")  # cold UIs
    pooled = _deployer(open_state, f"redteam-{uuid.uuid4().hex[:8]}", pool_size=1)
    assert pooled.pool is not None
    inst = _instance("user.redteam/log-1", "fake://x")
    staged = await FakeStager().stage("fake://x", deployer.instance_dir(inst.name) / "staged")
    try:
        deployment = await deployer.deploy(inst, staged)
        await deployer.wait_started(inst, deployment, timeout=60)
        await pooled.running()  # the agent's start-up reconcile: the pool starts
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            await pooled.pool.wait_until(lambda pool: len(pool.idle) == 1)
        log = deployer.instance_dir(inst.name) / "ui.log"
        assert log.exists()
        assert _read_as_nobody(log).returncode != 0
        assert _read_as_nobody(deployer.instance_dir(inst.name) / "ui.json").returncode != 0
        listing = subprocess.run(["/bin/ls", str(pooled.pool_dir)], user=NOBODY, group=NOBODY,
                                 cwd="/", capture_output=True, check=False, timeout=30)  # fmt: skip
        assert pooled.pool.idle[0].id.encode() not in listing.stdout
        for root in (deployer.root, deployer.pool_dir):
            assert root.stat().st_mode & 0o077 == 0
    finally:
        await deployer.delete(inst)
        await pooled.close()


@needs_root
@pytest.mark.mlflow
async def test_the_path_token_in_a_cold_uis_access_log_is_not_another_users(
    open_state: Path,
    demo_archive: Path,  # noqa: F811
) -> None:
    """The same with the real UI: its access log does hold the path token."""
    deployer = LocalProcessDeployer(open_state, label=f"redteam-{uuid.uuid4().hex[:8]}")
    inst = _instance("user.redteam/log-2", str(demo_archive))
    staged = await ArchiveStager().stage(
        str(demo_archive), deployer.instance_dir(inst.name) / "staged"
    )
    try:
        deployment = await deployer.deploy(inst, staged)
        await deployer.wait_started(inst, deployment, timeout=180)
        log = deployer.instance_dir(inst.name) / "ui.log"
        assert f"{inst.prefix}/health" in log.read_text()  # the capability, in the log
        seen = _read_as_nobody(log)
        assert seen.returncode != 0 and inst.prefix.encode() not in seen.stdout
    finally:
        await deployer.delete(inst)


@needs_root
async def test_another_user_reads_no_hand_over_or_proxy_secret(open_state: Path) -> None:
    """What holds (the kernel's and the deployer's): behind the web app, a member's secrets are
    in its environment (0400 /proc to this uid), in 0600 files under 0700 directories, and on
    no command line; the instance's copy of the proxy secret likewise."""
    deployer = _deployer(open_state, f"redteam-{uuid.uuid4().hex[:8]}", pool_size=1,
                         proxy_base="http://127.0.0.1:9")  # fmt: skip
    assert deployer.pool is not None
    inst = _instance("user.redteam/secret-1", "fake://x")
    staged = await FakeStager().stage("fake://x", deployer.instance_dir(inst.name) / "staged")
    try:
        await deployer.running()
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            await deployer.pool.wait_until(lambda pool: len(pool.idle) == 1)
        member = deployer.pool.idle[0]
        proxy_secret = deployer.pool.proxy_secret(member)
        assert proxy_secret
        home = deployer.pool_dir / member.id
        for path in (Path(f"/proc/{member.pid}/environ"), home / "handover.secret",
                     home / "proxy.secret", home / "ui.log"):  # fmt: skip
            assert path.exists() and _read_as_nobody(path).returncode != 0, path
        cmdline = _read_as_nobody(Path(f"/proc/{member.pid}/cmdline"))
        assert cmdline.returncode == 0  # world-readable, as always: nothing secret in it
        assert member.secret.encode() not in cmdline.stdout
        assert proxy_secret.encode() not in cmdline.stdout
        deployment = await deployer.deploy(inst, staged)
        assert deployment.handle.get("member") == member.id  # the warm member took it
        await deployer.wait_started(inst, deployment, timeout=60)
        assert _read_as_nobody(deployer.instance_dir(inst.name) / "proxy.secret").returncode != 0
        cmdline = _read_as_nobody(Path(f"/proc/{member.pid}/cmdline")).stdout
        assert inst.prefix.encode() not in cmdline  # the path token is on no command line
    finally:
        await deployer.delete(inst)
        await deployer.close()
    assert not (deployer.pool_dir / member.id).exists()
    assert list(deployer.pool_dir.iterdir()) == []  # nothing behind: no member, no secret


@needs_root
async def test_another_user_reads_no_path_token_from_the_ledger(open_state: Path) -> None:
    """The state dir was made 0755 and SQLite made ledger.db 0644: every local user read every
    instance's path token (fixed in runtime/wiring.py and the ledger by 975fe94)."""
    from idds_vis.runtime.config import Settings
    from idds_vis.runtime.wiring import build_agent

    state = open_state.parent / "fresh-state"  # as the agent makes it on first start
    agent = build_agent(Settings(state_dir=state, workers=1))
    await agent.start()
    try:
        await agent.stop()
    finally:
        await agent.ledger.close()
    ledger = state / "ledger.db"
    assert ledger.exists()
    assert _read_as_nobody(ledger).returncode != 0


# Finding 3 (Kubernetes, fixed) — a standby pod's MLflow process held the staging credentials.
# A cold UI pod stages in ``serve-ui`` and then execs MLflow with an allowlisted environment,
# so the process that parses hostile stores never has them (tests/security/
# test_ui_environment.py). A standby pod stages in the process that then serves MLflow
# (ui/pod_member.py): a memory scan of a real member found the token after such a hand-over.
# The deployer now starts such a source cold (kubernetes/deployer.py, 2c67466) and the member
# refuses a hand-over that carries one.


@pytest.mark.mlflow
async def test_a_standby_pod_refuses_a_hand_over_that_carries_credentials(
    tmp_path: Path,
    demo_archive: Path,  # noqa: F811
) -> None:
    """A standby pod stages in the process that then runs MLflow on the staged store (a memory
    scan found the token there after such a hand-over): it takes no credentials at all (400,
    and spent: 409 after), and the agent starts such sources cold (2c67466)."""
    from idds_vis.deploy.kubernetes import standby as sb
    from idds_vis.deploy.pool import SECRET_ENV
    from idds_vis.domain.errors import DeployError
    from tests.integration.test_standby_pod_member import _wait_listening
    from tests.panda_server import free_port

    secret, token = "pod-secret-for-the-test", f"tok-{uuid.uuid4().hex}"
    port = free_port()
    log = (tmp_path / "member.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "idds_vis.ui.pod_member", "--host", "127.0.0.1",
         "--port", str(port), "--workdir", str(tmp_path / "data")],
        env={**os.environ, SECRET_ENV: secret}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        await _wait_listening(f"http://127.0.0.1:{port}", proc)
        pod = {"metadata": {"name": "p"}, "status": {"podIP": "127.0.0.1"}}
        body = {"instance": "ui-1", "prefix": "/vis/abc123", "source": str(demo_archive),
                "env": {"IDDS_VIS_HTTP_TOKEN_HOST": "data.example",
                        "IDDS_VIS_HTTP_TOKEN": token}, "guard": False}  # fmt: skip
        saved, sb.UI_PORT = sb.UI_PORT, port
        try:
            with pytest.raises(DeployError, match=r"400.*no credentials"):
                await sb.post_hand_over(pod, body, secret)
            with pytest.raises(DeployError, match="409"):
                await sb.post_hand_over(pod, {**body, "env": {}}, secret)
        finally:
            sb.UI_PORT = saved
        assert not (tmp_path / "data" / "instance").exists()  # nothing was staged
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


# Kubernetes: what holds. A pod is a standby pod to the agent by its labels, which whoever may
# create pods in the UIs' namespace can copy (the version label too); but the agent hands over
# only with the pod's own Secret, which it made, and a pod without one is deleted, never handed
# anything. (Whoever may create pods and Secrets there can mount every UI's Secret anyway: the
# namespace's RBAC is the boundary, conf/standby/role.yaml grants the agent alone.)


async def test_a_planted_pod_with_standby_labels_is_handed_nothing(tmp_path: Path) -> None:
    from idds_vis.deploy.kubernetes import standby as sb
    from tests.integration.test_kube_deployer import NS, instance
    from tests.integration.test_kube_standby import Agent, HandOvers, until
    from tests.k8s_emulator import KubeEmulator

    async with KubeEmulator() as emu:
        hand_overs = HandOvers(emu)
        agent = Agent(emu.write_kubeconfig(tmp_path / "kubeconfig", NS), hand_overs, size=0)
        try:
            root = {"kind": "ConfigMap", "apiVersion": "v1",
                    "metadata": {"name": "someone-elses", "uid": "0000"}}  # fmt: skip
            planted = sb.standby_pod(agent.ks, "mlflow", "planted", agent.pool.version, root)
            del planted["metadata"]["ownerReferences"]
            emu.create(planted, NS)

            async def planted_is_idle() -> bool:
                return [p["metadata"]["name"] for p in await agent.pool.idle()] == ["planted"]

            await until("the planted pod Ready", planted_is_idle)
            inst = instance("90001")  # a source with no credential: it may start warm
            deployment = await agent.deployer.deploy(inst, None)
            assert "standby_pod" not in deployment.handle  # a cold start
            assert hand_overs.done == {}
            assert emu.get("pods", "planted", NS) is None
            await agent.deployer.wait_started(inst, deployment, timeout=30)
        finally:
            await agent.close()


# A visitor (or another local user) at an idle member: 503 to everything but the two control
# paths, which answer the agent's secret only; a refused hand-over spends the member; once
# handed, only the instance's prefix reaches MLflow (its own prefix is no way around the gate).


class _Asgi:
    """One request to an ASGI app in process: (status, what the inner app saw)."""

    def __init__(self) -> None:
        self.inner_calls: list[str] = []

    async def inner(self, scope: dict[str, object], receive: object, send: object) -> None:
        self.inner_calls.append(str(scope.get("path")))
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"data"})  # type: ignore[operator]

    def call(
        self,
        app: object,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
        kind: str = "http",
    ) -> object:
        sent: list[dict[str, object]] = []
        scope = {"type": kind, "path": path, "raw_path": path.encode(), "method": method,
                 "query_string": b"", "headers": [(b"host", b"127.0.0.1"), *headers]}  # fmt: skip

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))  # type: ignore[operator]
        if kind == "websocket":
            return sent[0].get("code")
        return sent[0]["status"]


def test_an_idle_member_answers_nothing_but_the_agent(tmp_path: Path) -> None:
    from idds_vis.ui.handover import HANDOVER_PATH, MEMBER_PREFIX, Handover
    from idds_vis.ui.handover import SECRET_HEADER as HEADER
    from idds_vis.ui.handover import STATE_PATH as STATE
    from idds_vis.ui.pool_member import Member

    (tmp_path / "instances").mkdir()
    asgi = _Asgi()
    member = Member(asgi.inner, Handover("s3cret", tmp_path / "instances"), None, "127.0.0.1")
    agent = ((HEADER.lower().encode(), b"s3cret"),)
    for method, path in (("GET", f"{MEMBER_PREFIX}/health"), ("GET", "/vis/x/"),
                         ("HEAD", "/"), ("OPTIONS", f"{MEMBER_PREFIX}/"),
                         ("POST", f"{MEMBER_PREFIX}/ajax-api/2.0/mlflow/experiments/search"),
                         ("POST", HANDOVER_PATH + "/"), ("GET", "/" + STATE),
                         ("GET", STATE.upper())):  # fmt: skip
        assert asgi.call(member, path, method, headers=agent) == 503, (method, path)
    assert asgi.call(member, f"{MEMBER_PREFIX}/", kind="websocket", headers=agent) == 1013
    assert asgi.call(member, STATE) == 403
    assert asgi.call(member, HANDOVER_PATH, "POST", b"{}") == 403
    assert asgi.call(member, HANDOVER_PATH, "POST", b"{}",
                     headers=((HEADER.lower().encode(), b"s3cret "),)) == 403  # fmt: skip
    assert asgi.call(member, HANDOVER_PATH, "GET", headers=agent) == 405
    # A hand-over of something not this deployer's spends the member: refused, then 409.
    assert asgi.call(member, HANDOVER_PATH, "POST", b'{"staged": "/etc", "prefix": "/vis/a"}',
                     headers=agent) == 403  # fmt: skip
    good = tmp_path / "instances" / "a" / "staged"
    good.mkdir(parents=True)
    body = f'{{"staged": "{good}", "prefix": "/vis/a"}}'.encode()
    assert asgi.call(member, HANDOVER_PATH, "POST", body, headers=agent) == 409
    assert asgi.call(member, "/vis/a/health", headers=agent) == 503
    assert asgi.inner_calls == []


def test_a_handed_member_serves_its_instance_prefix_only(tmp_path: Path) -> None:
    from idds_vis.ui.handover import HANDOVER_PATH, MEMBER_PREFIX, Handover
    from idds_vis.ui.handover import SECRET_HEADER as HEADER
    from idds_vis.ui.pool_member import Member

    class Unprepared(Member):
        async def take(self, body: bytes) -> str:  # the store's preparation is MLflow's
            return self.handover.accept(body).prefix

        async def _warm(self, served: object, prefix: str) -> None:
            pass

    good = tmp_path / "instances" / "a" / "staged"
    good.mkdir(parents=True)
    asgi = _Asgi()
    member = Unprepared(asgi.inner, Handover("s3cret", tmp_path / "instances"), None, "h")
    agent = ((HEADER.lower().encode(), b"s3cret"),)
    body = f'{{"staged": "{good.resolve()}", "prefix": "/vis/a"}}'.encode()
    assert asgi.call(member, HANDOVER_PATH, "POST", body, headers=agent) == 200
    assert asgi.call(member, "/vis/a/health") == 200
    assert asgi.inner_calls == [f"{MEMBER_PREFIX}/health"]
    for path in (f"{MEMBER_PREFIX}/health", "/vis/b/health", "/vis/a/../b/health", "/health"):
        assert asgi.call(member, path) == 403, path
    assert asgi.call(member, HANDOVER_PATH, "POST", body, headers=agent) == 409
    assert asgi.inner_calls == [f"{MEMBER_PREFIX}/health"]


# Finding 4 — a dead member's pid was enough. ``take()`` checked only that the member's pid
# ran. A member that died (OOM, a crash) frees its loopback port to any local user, and its
# pid to the next process (pids are reused, and a user can cycle through them to land on one):
# the agent then handed "the member" over, POSTing its secret and staged path to the port,
# and behind the web app sent that task's visitors, with the UI's proxy secret, to whoever
# listened there. Retiring such a member stopped the process group that had the pid. Fix
# (deploy/pool.py, local_processes.is_member): a member is taken, or stopped, only while the
# pid is still that member (this user's, its member id in its environment).


async def test_a_member_whose_pid_another_process_has_is_not_taken_nor_stopped(
    tmp_path: Path,
) -> None:
    import time as clock

    from idds_vis.deploy.pool import LocalPool, Member

    async def no_spawn(member_id: str, port: int, extra: dict[str, str]) -> int:
        raise AssertionError("not started here")

    async def no_port() -> int:
        raise AssertionError("not started here")

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    reused = subprocess.Popen(["/bin/sleep", "600"], start_new_session=True)  # the pid's new owner
    pool = LocalPool(tmp_path / "pool", label="x", size=1, max_age=3600, version="v1",
                     spawn=no_spawn, pick_port=no_port)  # fmt: skip
    member = Member("cd" * 16, reused.pid, int(squatter.getsockname()[1]), "secret",
                    clock.time(), "v1")  # fmt: skip
    (tmp_path / "pool" / member.id).mkdir(parents=True)
    pool.idle.append(member)
    try:
        assert await pool.take() is None
        async with asyncio.timeout(60):  # a hang guard: the retirement runs in the background
            while pool._background:
                await asyncio.gather(*pool._background)
        assert reused.poll() is None  # not the member: not stopped
        assert not (tmp_path / "pool" / member.id).exists()  # the dead member's files go
    finally:
        reused.kill()
        reused.wait()
        squatter.close()


async def test_shutdown_stops_no_process_that_took_a_dead_members_pid(tmp_path: Path) -> None:
    import time as clock

    from idds_vis.deploy.pool import LocalPool, Member

    async def no_spawn(member_id: str, port: int, extra: dict[str, str]) -> int:
        raise AssertionError("not started here")

    async def no_port() -> int:
        raise AssertionError("not started here")

    reused = subprocess.Popen(["/bin/sleep", "600"], start_new_session=True)  # the pid's new owner
    pool = LocalPool(tmp_path / "pool", label="x", size=1, max_age=3600, version="v1",
                     spawn=no_spawn, pick_port=no_port)  # fmt: skip
    member = Member("ef" * 16, reused.pid, 1, "secret", clock.time(), "v1")
    (tmp_path / "pool" / member.id).mkdir(parents=True)
    pool.idle.append(member)
    try:
        await pool.close()
        assert reused.poll() is None
        assert not (tmp_path / "pool" / member.id).exists()
    finally:
        reused.kill()
        reused.wait()


# Finding 5 — an agent restarted with the pool turned off left a crashed agent's idle members
# running for good (listening, their secrets in their environment and files): only a pool
# adopts or closes members. Fix (deploy/local.py ``running``): without a pool, the first look
# stops the unclaimed members of this label and removes their directories.


async def test_idle_members_of_a_dead_agent_go_when_the_pool_is_turned_off(tmp_path: Path) -> None:
    state, label = tmp_path / "state", f"redteam-{tmp_path.name}"
    first = _deployer(state, label, pool_size=1)
    assert first.pool is not None
    await first.running()
    async with asyncio.timeout(120):  # a hang guard, not a timing assertion
        await first.pool.wait_until(lambda pool: len(pool.idle) == 1)
    member = first.pool.idle[0]
    first.pool._task.cancel()  # type: ignore[union-attr]  # the agent dies: no close()
    try:
        again = _deployer(state, label)  # restarted with ui_pool off
        assert await again.running() == []
        assert procs.find_pool_members(label, state / "pool") == []
        assert not (state / "pool" / member.id).exists()
    finally:
        procs.stop_process_group(member.pid)
