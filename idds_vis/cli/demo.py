"""``idds-vis demo``: train, pack, and send the artefacts through the production pipeline."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from idds_vis.cli.demo_training import pack, train
from idds_vis.domain.models import Instance, VisRequest
from idds_vis.domain.phases import HAPPY_PATH, TERMINAL, Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent


def _json_line(inst: Instance) -> str:
    data = {"phase": inst.phase.value, "task_id": inst.task_id}
    if inst.phase is Phase.READY:
        data["url"] = inst.url or ""
        data["expires_at"] = inst.expires_at.isoformat() if inst.expires_at else ""
    if inst.reason and inst.phase is Phase.FAILED:
        data["reason"] = inst.reason
    return json.dumps(data)


class _Display:
    """One line of JSON per phase for scripts, or a progress bar and the URL for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            console=Console(stderr=True), disable=as_json,
        )  # fmt: skip
        self.bar = self.progress.add_task("requested", total=len(HAPPY_PATH) - 1)

    def say(self, text: str) -> None:
        if not self.as_json:
            self.progress.console.print(text)

    def show(self, inst: Instance) -> None:
        if self.as_json:
            print(_json_line(inst), flush=True)
            return
        step = HAPPY_PATH.index(inst.phase) if inst.phase in HAPPY_PATH else 0
        self.progress.update(self.bar, description=inst.phase.value, completed=step)
        if inst.phase is Phase.READY and inst.expires_at is not None:
            self.say(
                f"[green]ready[/green]: {inst.url}  "
                f"(expires {inst.expires_at:%H:%M:%S} UTC; Ctrl-C tears it down now)"
            )
        elif inst.phase is Phase.FAILED:
            self.say(f"[red]failed[/red]: {inst.reason}")


async def _follow(events: asyncio.Queue[Instance], task_id: str, display: _Display) -> Instance:
    last: Instance | None = None
    while last is None or last.phase not in TERMINAL:
        inst = await events.get()
        if inst.task_id != task_id or (last is not None and inst.phase is last.phase):
            continue
        last = inst
        display.show(inst)
    return last


async def _demo(settings: Settings, ttl: timedelta, as_json: bool, workdir: Path) -> int:
    display = _Display(as_json)
    task_id = f"demo-{uuid.uuid4().hex[:8]}"
    display.say("[bold]training[/bold] a tiny model, logged through MLflow…")
    job = await asyncio.to_thread(train, workdir)
    archive = await asyncio.to_thread(pack, job, workdir / f"user.demo.{task_id}.metrics.tgz")

    agent = build_agent(settings)
    events = agent.events.subscribe()
    await agent.start()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    request = VisRequest(task_id=task_id, source=str(archive), ttl=ttl, origin="demo")
    display.progress.start()
    try:
        await agent.submit(request)
        follower = asyncio.create_task(_follow(events, task_id, display))
        waiter = asyncio.create_task(interrupted.wait())
        await asyncio.wait({follower, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not follower.done():
            # Ctrl-C: end it now through the same durable path as a TTL, and show it ending.
            await agent.teardown(request.key)
        last = await follower
    finally:
        display.progress.stop()
        await agent.stop()
        inst = await agent.ledger.get(request.key)
        if inst is not None:
            await agent.deployer.delete(inst)  # nothing may outlive the demo, whatever happened
        await agent.ledger.close()
    return 0 if last.phase is Phase.EXPIRED else 1


def run_demo(settings: Settings, ttl: timedelta, as_json: bool, explicit_state: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="idds-vis-demo-"))
    if not explicit_state:
        # A demo of its own: it never touches a real agent's ledger or UIs.
        settings = settings.replace(state_dir=workdir / "state")
        settings.database_url = None
    try:
        return asyncio.run(_demo(settings, ttl, as_json, workdir))
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        sys.stdout.flush()
