"""``idds-vis demo``: train, pack, and send the artefacts through the production pipeline."""

from __future__ import annotations

import asyncio
import contextlib
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


async def _demo(settings: Settings, ttl: timedelta, as_json: bool, workdir: Path) -> int:
    console = Console(stderr=True)
    task_id = f"demo-{uuid.uuid4().hex[:8]}"
    if not as_json:
        console.print("[bold]training[/bold] a tiny model, logged through MLflow…")
    job = await asyncio.to_thread(train, workdir)
    archive = await asyncio.to_thread(pack, job, workdir / f"user.demo.{task_id}.metrics.tgz")

    agent = build_agent(settings)
    events = agent.events.subscribe()
    await agent.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    request = VisRequest(task_id=task_id, source=str(archive), ttl=ttl, origin="demo")
    await agent.submit(request)
    progress = (
        None
        if as_json
        else Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), console=console
        )
    )
    bar = progress.add_task("requested", total=len(HAPPY_PATH) - 1) if progress else None
    if progress:
        progress.start()
    last: Instance | None = None
    stop_wait = asyncio.create_task(stop.wait())
    try:
        while last is None or last.phase not in TERMINAL:
            getter = asyncio.create_task(events.get())
            done, _ = await asyncio.wait({getter, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                # Ctrl-C: tear down now, then keep showing phases until expired.
                await agent.teardown(request.key)
                stop_wait = asyncio.create_task(asyncio.Event().wait())
                continue
            inst = getter.result()
            if inst.task_id != task_id or (last is not None and inst.phase is last.phase):
                continue
            last = inst
            if as_json:
                print(_json_line(inst), flush=True)
            elif progress is not None and bar is not None:
                step = HAPPY_PATH.index(inst.phase) if inst.phase in HAPPY_PATH else 0
                progress.update(bar, description=inst.phase.value, completed=step)
                if inst.phase is Phase.READY:
                    progress.console.print(
                        f"[green]ready[/green]: {inst.url}  "
                        f"(expires {inst.expires_at:%H:%M:%S} UTC; Ctrl-C tears it down now)"
                    )
                if inst.phase is Phase.FAILED:
                    progress.console.print(f"[red]failed[/red]: {inst.reason}")
    finally:
        stop_wait.cancel()
        if progress:
            progress.stop()
        await agent.stop()
        with contextlib.suppress(Exception):
            await agent.deployer.delete(last) if last else None
        await agent.ledger.close()
    return 0 if last is not None and last.phase is Phase.EXPIRED else 1


def run_demo(settings: Settings, ttl: timedelta, as_json: bool, explicit_state: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="idds-vis-demo-"))
    if not explicit_state:
        # A demo of its own: it never touches a real agent's ledger or UIs.
        settings = settings.replace(state_dir=workdir / "state", database_url=None, label=None)
        settings.database_url = None
    try:
        return asyncio.run(_demo(settings, ttl, as_json, workdir))
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        sys.stdout.flush()
