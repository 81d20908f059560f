"""Local-process deployer: one ``idds-vis serve-ui`` process per instance, on its own port."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from idds_vis.deploy import local_processes as procs
from idds_vis.deploy.local_ports import pick_port
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Deployment, Instance, RunningUI, StagedArtefacts
from idds_vis.domain.naming import url_prefix
from idds_vis.domain.ui_environment import ui_environment
from idds_vis.staging.info import write_staged_info
from idds_vis.staging.permissions import make_writable

SERVE_UI = ("-m", "idds_vis", "serve-ui")
# For tests and benchmarks only (setting ui_stub): a tiny process answering what the readiness
# probe checks, with the same arguments and environment (idds_vis/ui/stub.py).
STAND_IN_UI = ("-m", "idds_vis.ui.stub")


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
        poll_interval: float = 0.25,
        ui_argv: Sequence[str] = SERVE_UI,
    ) -> None:
        self.root = state_dir / "instances"
        self.label = label
        self.bind_host = bind_host
        self.public_host = public_host
        self.python = python
        self.poll_interval = poll_interval
        # What runs each UI after the interpreter: serve-ui, or the stand-in (STAND_IN_UI).
        self.ui_argv = tuple(ui_argv)

    def instance_dir(self, name: str) -> Path:
        return self.root / name

    def ui_home(self, name: str) -> Path:
        """The UI's private HOME: where serve-ui puts it too (``<work>/run/home``)."""
        return self.instance_dir(name) / "run" / "home"

    def staging_dir(self, instance: Instance) -> Path | None:
        return self.instance_dir(instance.name) / "staged"

    def _deployment(self, name: str, port: int, pid: int) -> Deployment:
        prefix = url_prefix(name)
        return Deployment(
            url=f"http://{self.public_host}:{port}{prefix}/",
            health_url=f"http://{self.bind_host}:{port}{prefix}/health",
            handle={"pid": pid, "port": port},
        )

    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        if staged is None:
            raise DeployError("the local deployer needs staged artefacts")
        running_uis = await asyncio.to_thread(procs.find_ui_processes, self.label)
        for running in running_uis:
            if running.name == instance.name and running.port is not None:
                return self._deployment(instance.name, running.port, running.pid)
        await asyncio.to_thread(write_staged_info, staged)
        taken = {ui.port for ui in running_uis if ui.port is not None}
        port = await asyncio.to_thread(pick_port, self.bind_host, taken)
        log = self.instance_dir(instance.name) / "ui.log"
        home = self.ui_home(instance.name)
        await asyncio.to_thread(home.mkdir, mode=0o700, parents=True, exist_ok=True)
        # An allowlist of the agent's environment, never all of it: the agent's cloud
        # credentials, ~/.aws and instance metadata are not the UI's to use on what the
        # staged data names (domain/ui_environment.py).
        env = ui_environment(
            os.environ,
            home=str(home),
            extra={
                "IDDS_VIS_UI_LABEL": self.label,
                "IDDS_VIS_UI_NAME": instance.name,
                "IDDS_VIS_UI_PORT": str(port),
            },
        )
        argv = [
            self.python, *self.ui_argv,
            "--staged", staged.root,
            "--prefix", url_prefix(instance.name),
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
            )
        deployment = self._deployment(instance.name, port, proc.pid)
        (self.instance_dir(instance.name) / "ui.json").write_text(json.dumps(deployment.handle))
        # Reap the child when it exits so it never lingers as a zombie of the agent.
        asyncio.get_running_loop().create_task(proc.wait())
        return deployment

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
                    async with session.get(deployment.health_url) as resp:
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
            known = procs.ui_process(pid, self.label) if pid is not None else None
            if known is not None and known.name == name:
                procs.stop_process_group(known.pid)
            else:
                for running in procs.find_ui_processes(self.label):
                    if running.name == name:
                        procs.stop_process_group(running.pid)
            path = self.instance_dir(name)
            make_writable(path)
            shutil.rmtree(path, ignore_errors=True)

        await asyncio.to_thread(_remove)

    async def running(self) -> list[RunningUI]:
        found = await asyncio.to_thread(procs.find_ui_processes, self.label)
        return [RunningUI(p.name, {"pid": p.pid, "port": p.port}) for p in found]
