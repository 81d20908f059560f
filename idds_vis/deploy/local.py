"""Local-process deployer: one UI process (``ui/uvicorn_server.py``) per instance, own port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from idds_vis.deploy import local_processes as procs
from idds_vis.deploy.local_ports import listening_socket, pick_and_listen
from idds_vis.deploy.pool import (
    LocalPool,
    Member,
    PoolObserver,
    remove_member_dir,
    stop_unclaimed_members,
    ui_version,
)
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Deployment, Instance, RunningUI, StagedArtefacts
from idds_vis.domain.naming import LISTEN_FD_ENV, PREFIX_ENV, PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.domain.ui_environment import ui_environment
from idds_vis.staging.info import write_staged_info
from idds_vis.staging.paths import shown
from idds_vis.staging.permissions import make_writable

# The UI process itself (ui/uvicorn_server.py): prepares the staged store and serves it, MLflow
# imported once; not through ``idds-vis serve-ui``, whose CLI costs ~2 s of CPU to import.
SERVE_UI = ("-m", "idds_vis.ui.uvicorn_server")
# For tests and benchmarks only (setting ui_stub): a tiny process answering what the readiness
# probe checks, with the same arguments and environment (idds_vis/ui/stub.py).
STAND_IN_UI = ("-m", "idds_vis.ui.stub")
# A warm pool's members (issue 18, deploy/pool.py): MLflow's, or the stand-in's pool mode.
POOL_MEMBER = ("-m", "idds_vis.ui.pool_member")
STAND_IN_POOL_MEMBER = ("-m", "idds_vis.ui.stub", "--pool-member")
logger = logging.getLogger(__name__)


class ClaimedElsewhere(DeployError):
    """A pool member's claim file existed already: another agent on this state took it."""


class LocalProcessDeployer:
    """UIs survive an agent restart (own session); the reconciler adopts or removes them."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        label: str,
        bind_host: str = "127.0.0.1",
        public_host: str = "127.0.0.1",
        python: str = sys.executable,
        poll_interval: float = 0.1,  # a refused loopback connect: cheap to try often
        ui_argv: Sequence[str] = SERVE_UI,
        proxy_base: str | None = None,
        pool_size: int = 0,
        pool_max_age: float = 6 * 3600.0,
        pool_argv: Sequence[str] = POOL_MEMBER,
        pool_version: str | None = None,
        pool_observer: PoolObserver | None = None,
    ) -> None:
        self.root = state_dir / "instances"
        # Pool members' own directories (HOME, scratch, secrets, claim file). Always known, so
        # an agent with the pool turned off still finds the UIs that were members.
        self.pool_dir = state_dir / "pool"
        self.label = label
        self.bind_host = bind_host
        self.public_host = public_host
        self.python = python
        self.poll_interval = poll_interval
        # What runs each UI after the interpreter: serve-ui, or the stand-in (STAND_IN_UI).
        self.ui_argv = tuple(ui_argv)
        # Issue 17: the web app's public base URL. With it, each UI answers only the web app's
        # proxy at <proxy_base>/vis/<path token>/ (a per-instance secret header, checked in the
        # UI process); without a web app there is nobody to proxy, and the UI is reached
        # directly, its random path the only capability.
        self.proxy_base = proxy_base.rstrip("/") if proxy_base else None
        self._secrets: dict[tuple[str, int], str] = {}
        self.pool_argv = tuple(pool_argv)
        # Members' listening sockets between the choice of their port and their start.
        self._listeners: dict[int, socket.socket] = {}
        self.pool: LocalPool | None = None
        self._idle_members_checked = False
        self._roots_private = False  # _private_roots done (once per deployer)
        if pool_size > 0:
            self.pool = LocalPool(
                self.pool_dir,
                label=label,
                size=pool_size,
                max_age=pool_max_age,
                version=pool_version or functools.partial(ui_version, self.pool_argv, python),
                spawn=self._spawn_member,
                pick_port=self._member_port,
                host=self._direct_host(),
                observer=pool_observer,
            )

    def _private_roots(self) -> None:
        """Blocking: ``instances/`` and ``pool/`` readable by this user only. The state dir is
        often 0755 (``mkdir -p``), and a stager makes ``instances/<name>/`` as a parent of its
        0700 ``staged`` (0755 too): a cold UI's ``ui.log`` there (0644) has its access log,
        whose request lines carry the path token, without a web app the UI's only capability;
        ``pool/`` lists the members' ids (red team, issue 18). Set, not only made: a state
        dir of an earlier version has them 0755. Once: both are this deployer's own."""
        if self._roots_private:
            return
        for root in (self.root, self.pool_dir):
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.chmod(0o700)
        self._roots_private = True

    def _direct_host(self) -> str:
        return "127.0.0.1" if self.bind_host in ("0.0.0.0", "") else self.bind_host

    def instance_dir(self, name: str) -> Path:
        return self.root / name

    def ui_home(self, name: str) -> Path:
        """The UI's private HOME: where serve-ui puts it too (``<work>/run/home``)."""
        return self.instance_dir(name) / "run" / "home"

    def staging_dir(self, instance: Instance) -> Path | None:
        return self.instance_dir(instance.name) / "staged"

    def _secret_file(self, name: str) -> Path:
        return self.instance_dir(name) / "proxy.secret"

    def _new_secret(self, name: str) -> str:
        """A fresh secret for a UI about to start, readable by this user only (0600)."""
        secret = secrets.token_urlsafe(32)
        path = self._secret_file(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        return secret

    def _read_secret(self, name: str) -> str | None:
        try:
            fd = os.open(self._secret_file(name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd) as found:
            return found.read().strip() or None

    def _direct(self, port: int, prefix: str) -> str:
        return f"http://{self._direct_host()}:{port}{prefix}/"

    def _deployment(
        self, instance: Instance, port: int, pid: int, secret: str | None
    ) -> Deployment:
        prefix = instance.prefix
        direct = self._direct(port, prefix)
        if self.proxy_base is None or secret is None:
            return Deployment(
                url=f"http://{self.public_host}:{port}{prefix}/",
                health_url=f"{direct}health",
                handle={"pid": pid, "port": port},
            )
        return Deployment(
            url=f"{self.proxy_base}{prefix}/",
            health_url=f"{direct}health",
            handle={"pid": pid, "port": port},
            probe_url=direct,
            probe_headers={PROXY_HEADER: secret},
        )

    async def upstream(self, instance: Instance) -> tuple[str, dict[str, str]] | None:
        """The origin (``http://127.0.0.1:<port>``) where the web app's proxy reaches this UI,
        and the header it must add; None when the UI does not run (no port, no secret)."""
        port, pid = instance.handle.get("port"), instance.handle.get("pid")
        if not isinstance(port, int) or not isinstance(pid, int):
            return None
        secret = self._secrets.get((instance.name, pid))
        if secret is None:
            secret = await asyncio.to_thread(self._read_secret, instance.name)
            if secret is None:
                return None
            if len(self._secrets) > 4096:  # bounded: stale entries of ended UIs go at once
                self._secrets.clear()
            self._secrets[(instance.name, pid)] = secret
        return self._direct(port, "").rstrip("/"), {PROXY_HEADER: secret}

    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        if staged is None:
            raise DeployError("the local deployer needs staged artefacts")
        await asyncio.to_thread(self._private_roots)
        running_uis = await asyncio.to_thread(procs.find_ui_processes, self.label, self.pool_dir)
        for running in running_uis:
            if running.name == instance.name and running.port is not None:
                secret = await asyncio.to_thread(self._read_secret, instance.name)
                return self._deployment(instance, running.port, running.pid, secret)
        await asyncio.to_thread(write_staged_info, staged)
        if self.pool is not None:
            self.pool.start()
            member = await self.pool.take()
            if member is not None:
                try:
                    return await self._hand_over(instance, staged, member)
                except ClaimedElsewhere as exc:  # not ours to stop: start cold instead
                    logger.warning("%s: %s; starting a new UI instead", instance.name, exc)
                except DeployError as exc:  # that member is done with; start cold instead
                    logger.warning("%s: %s; starting a new UI instead", instance.name, exc)
                    await asyncio.to_thread(self._stop_member, member)
        taken = {ui.port for ui in running_uis if ui.port is not None}
        taken |= {m.port for m in (self.pool.idle if self.pool else [])}
        listener = await asyncio.to_thread(pick_and_listen, self.bind_host, taken)
        try:
            return await self._start_cold(instance, staged, listener)
        finally:
            listener.close()  # the UI has its own copy

    async def _start_cold(
        self, instance: Instance, staged: StagedArtefacts, listener: socket.socket
    ) -> Deployment:
        port = int(listener.getsockname()[1])
        log = self.instance_dir(instance.name) / "ui.log"
        home = self.ui_home(instance.name)
        await asyncio.to_thread(home.mkdir, mode=0o700, parents=True, exist_ok=True)
        secret = None
        extra = {
            "IDDS_VIS_UI_LABEL": self.label,
            "IDDS_VIS_UI_NAME": instance.name,
            "IDDS_VIS_UI_PORT": str(port),
            LISTEN_FD_ENV: str(listener.fileno()),
            PREFIX_ENV: instance.prefix,
        }
        if self.proxy_base is not None:
            # In the environment (0600 to this user in /proc), never on the command line.
            secret = await asyncio.to_thread(self._new_secret, instance.name)
            extra[PROXY_SECRET_ENV] = secret
        # An allowlist of the agent's environment, never all of it: the agent's cloud
        # credentials, ~/.aws and instance metadata are not the UI's to use on what the
        # staged data names (domain/ui_environment.py).
        env = ui_environment(os.environ, home=str(home), extra=extra)
        argv = [
            self.python, *self.ui_argv,
            "--staged", staged.root,
            "--host", self.bind_host,
            "--port", str(port),
            "--allowed-host", self.public_host,
            "--cors-origin", f"http://{self.public_host}:{port}",
        ]  # fmt: skip
        out = await asyncio.to_thread(log.open, "ab")
        with out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives an agent restart; stopped as a group
                pass_fds=(listener.fileno(),),
            )
        deployment = self._deployment(instance, port, proc.pid, secret)
        handle_file = self.instance_dir(instance.name) / "ui.json"
        await asyncio.to_thread(handle_file.write_text, json.dumps(deployment.handle))
        # Reap the child when it exits so it never lingers as a zombie of the agent.
        asyncio.get_running_loop().create_task(proc.wait())
        return deployment

    async def _hand_over(
        self, instance: Instance, staged: StagedArtefacts, member: Member
    ) -> Deployment:
        """Give a warm member this instance: claimed first (so a restarted agent knows whose
        it is), then the one authenticated hand-over call."""
        assert self.pool is not None
        idir = self.instance_dir(instance.name)
        await asyncio.to_thread(idir.mkdir, mode=0o700, parents=True, exist_ok=True)
        if not await self.pool.claim(member, instance.name):
            raise ClaimedElsewhere("the pooled UI was claimed by another agent")
        secret = None
        if self.proxy_base is not None:
            secret = await asyncio.to_thread(self.pool.proxy_secret, member)
            if secret is None:
                raise DeployError("the pooled UI's proxy secret is missing")
            await asyncio.to_thread(self._write_secret, instance.name, secret)
        root = await asyncio.to_thread(Path(staged.root).resolve)
        body = {"staged": str(root), "prefix": instance.prefix}
        await self.pool.hand_over(member, body, timeout=120.0)
        deployment = self._deployment(instance, member.port, member.pid, secret)
        deployment.handle["member"] = member.id
        await asyncio.to_thread((idir / "ui.json").write_text, json.dumps(deployment.handle))
        return deployment

    def _write_secret(self, name: str, secret: str) -> None:
        path = self._secret_file(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)

    def _stop_member(self, member: Member) -> None:
        procs.stop_process_group(member.pid)
        remove_member_dir(self.pool_dir, member.id)

    async def _member_port(self) -> int:
        """A member's port, already listening (kept until ``_spawn_member`` hands it over)."""
        running_uis = await asyncio.to_thread(procs.find_ui_processes, self.label, self.pool_dir)
        taken = {ui.port for ui in running_uis if ui.port is not None}
        taken |= {m.port for m in (self.pool.idle if self.pool else [])}
        taken |= set(self._listeners)
        listener = await asyncio.to_thread(pick_and_listen, self.bind_host, taken)
        port = int(listener.getsockname()[1])
        self._listeners[port] = listener
        return port

    async def _spawn_member(self, member_id: str, port: int, extra: dict[str, str]) -> int:
        """Start one pool member (deploy/pool.py's Spawner)."""
        if self.proxy_base is None:
            extra.pop(PROXY_SECRET_ENV, None)  # no web app: reached directly, as cold UIs
        workdir = self.pool_dir / member_id
        home = workdir / "run" / "home"
        await asyncio.to_thread(home.mkdir, mode=0o700, parents=True, exist_ok=True)
        listener = self._listeners.pop(port, None)
        if listener is None:
            listener = await asyncio.to_thread(listening_socket, self.bind_host, port)
        with listener:  # the member has its own copy once started
            return await self._spawn_member_on(workdir, home, port, extra, listener)

    async def _spawn_member_on(
        self, workdir: Path, home: Path, port: int, extra: dict[str, str],
        listener: socket.socket,
    ) -> int:
        extra = {**extra, LISTEN_FD_ENV: str(listener.fileno())}
        env = ui_environment(os.environ, home=str(home), extra=extra)
        argv = [
            self.python, *self.pool_argv,
            "--host", self.bind_host,
            "--port", str(port),
            "--instances", str(self.root.resolve()),
            "--workdir", str(workdir),
            "--allowed-host", self.public_host,
            "--cors-origin", f"http://{self.public_host}:{port}",
        ]  # fmt: skip
        out = await asyncio.to_thread((workdir / "ui.log").open, "ab")
        with out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        asyncio.get_running_loop().create_task(proc.wait())
        return proc.pid

    async def close(self) -> None:
        """At the agent's stop: idle pool members are stopped and removed (UIs stay)."""
        if self.pool is not None:
            await self.pool.close()
        for listener in self._listeners.values():  # ports chosen for members never started
            listener.close()
        self._listeners.clear()

    async def wait_started(
        self, instance: Instance, deployment: Deployment, timeout: float
    ) -> None:
        pid = int(deployment.handle["pid"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client_timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                try:
                    async with session.get(
                        deployment.health_url, headers=deployment.probe_headers
                    ) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                code = await asyncio.to_thread(procs.exit_code, pid)
                if code is not None:
                    raise DeployError(
                        f"the MLflow UI exited while starting (code {code}): "
                        f"{self._last_log_line(instance.name)}"
                    )
                if loop.time() > deadline:
                    raise DeployError(f"the MLflow UI did not answer within {timeout:.0f} s")
                await asyncio.sleep(self.poll_interval)

    def _last_log_line(self, name: str) -> str:
        log = self.instance_dir(name) / "ui.log"
        try:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no output"

    async def record_expiry(self, instance: Instance) -> None:
        """The ledger is the only schedule on one machine: nothing else to update."""

    async def roll_to_current(self, ui: RunningUI) -> bool:
        """A local UI runs the installed idds-vis; a new version takes effect at its restart."""
        return False

    async def delete(self, instance: Instance) -> None:
        pid = instance.handle.get("pid")
        await self.delete_by_name(instance.name, pid=pid if isinstance(pid, int) else None)

    async def delete_by_name(self, name: str, *, pid: int | None = None) -> None:
        def _remove() -> None:
            # The recorded pid first: reading every process's environment takes ~0.1 s with a
            # few hundred UIs, and the reaper removes UIs one after another. A UI runs once per
            # name, so when the recorded one is it, there is no other to look for.
            known = procs.ui_process(pid, self.label, self.pool_dir) if pid is not None else None
            stopped = []
            if known is not None and known.name == name:
                procs.stop_process_group(known.pid)
                stopped.append(known)
            else:
                for running in procs.find_ui_processes(self.label, self.pool_dir):
                    if running.name == name:
                        procs.stop_process_group(running.pid)
                        stopped.append(running)
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                # Not one of this deployer's instance directories: the name came from a
                # process's environment or a claim file, and instances/<'/x' or '..'> is
                # outside them (red team, issue 18: rmtree of any directory, as the agent).
                logger.warning("not removing files for the UI name '%s': no instance name",
                               shown(name))  # fmt: skip
                return
            path = self.instance_dir(name)
            # A UI that was a pool member: its own directory goes too (found by its process,
            # or by the record of its hand-over when the process is gone already).
            members = {ui.member for ui in stopped if ui.member}
            with contextlib.suppress(OSError, ValueError, AttributeError):
                members.add(json.loads((path / "ui.json").read_text()).get("member"))
            for member in members:
                if isinstance(member, str):
                    remove_member_dir(self.pool_dir, member)
            make_writable(path)
            shutil.rmtree(path, ignore_errors=True)

        await asyncio.to_thread(_remove)

    async def running(self) -> list[RunningUI]:
        if self.pool is not None:
            await asyncio.to_thread(self._private_roots)  # before the first member's secret
            self.pool.start()  # the start-up reconcile asks first: adopt and refill from then
        elif not self._idle_members_checked:
            # The pool turned off after an agent that had one died: its idle members (each
            # with its secrets) would stay forever, as nobody adopts or closes them. Once.
            self._idle_members_checked = True
            await asyncio.to_thread(stop_unclaimed_members, self.label, self.pool_dir)
        found = await asyncio.to_thread(procs.find_ui_processes, self.label, self.pool_dir)
        return [RunningUI(p.name, {"pid": p.pid, "port": p.port}) for p in found]
