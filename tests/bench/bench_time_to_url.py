"""Time-to-URL (issue 18): bare tuned MLflow, idds-vis cold, idds-vis warm, on the same data.

Run by hand (not by CI):  python tests/bench/bench_time_to_url.py [--runs 5]

Interleaved in one run, on the demo's real training output, each run measures:
- the tuned bare server (``mlflow server --workers 1``, job runner off): start -> /health 200;
- idds-vis cold (no pool): request -> verified ready through the real pipeline (staging,
  store preparation, the UI's start, the full readiness probe), with the per-phase breakdown
  from the ledger and the UI's own start-up phases from its log;
- idds-vis warm (``ui_pool: {mlflow: 1}``, the member idle and listening): request -> verified
  ready, the same pipeline handing the staged store to the member;
- the RSS of the idle pool member (MLflow imported, no data).
It prints medians; its last line is
``RESULT cold_over_tuned=<ratio> warm_s=<median s> idle_member_rss_mb=<MB>``. It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent
from tests.demo_data import make_demo_archive


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far: what a start costs
    whatever else the machine runs."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_server(job: Path, tuned: bool) -> tuple[float, int, int]:
    """Seconds to /health 200, settled RSS and process count of a plain mlflow server."""
    work = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    shutil.copytree(job, work / "job")
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    argv = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{work / 'job' / 'mlflow.db'}"]  # fmt: skip
    if tuned:
        argv += ["--workers", "1"]
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        elapsed = time.perf_counter() - start
        CPU["tuned"].append(tree_cpu(proc.pid))
        time.sleep(3)  # let workers and the job runner finish starting before reading memory
        rss = tree_rss(proc.pid)
        count = 1 + len(psutil.Process(proc.pid).children(recursive=True))
        return elapsed, rss, count
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


CPU: dict[str, list[float]] = {"tuned": [], "cold": []}
PHASES = ["requested", "resolving", "staging", "deploying", "starting", "ready"]


async def idds_vis_run(
    archive: Path, index: int, warm: bool
) -> tuple[float, dict[str, float], str, int]:
    """Seconds request -> ready, the phase breakdown, the UI's start-up line, the idle
    member's RSS (warm only; 0 otherwise)."""
    state = Path(tempfile.mkdtemp(prefix="bench-idds-vis-"))
    pool = {"mlflow": 1} if warm else {}
    agent = build_agent(Settings(state_dir=state, workers=1, ui_pool=pool))
    events = agent.events.subscribe()
    await agent.start()
    member_rss = 0
    try:
        deployer = agent.deployer
        if warm:
            assert isinstance(deployer, LocalProcessDeployer) and deployer.pool is not None
            await deployer.pool.wait_until(lambda p: len(p.idle) == 1)
            await asyncio.sleep(2)  # settle before reading memory (a reading, not a sync)
            member_rss = tree_rss(deployer.pool.idle[0].pid)
        req = VisRequest(f"bench-{index}-{os.getpid()}-{int(warm)}", source=str(archive))
        t0 = time.perf_counter()
        await agent.submit(req)
        while True:
            inst = await events.get()
            if inst.task_id == req.task_id and inst.phase in (Phase.READY, Phase.FAILED):
                break
        elapsed = time.perf_counter() - t0
        if inst.phase is Phase.FAILED:
            raise SystemExit(f"failed: {inst.reason}")
        if not warm:
            CPU["cold"].append(tree_cpu(int(inst.handle["pid"])))
        history = await agent.ledger.history(req.key)
        stamps = {e.phase.value: e.at for e in history}
        phases = {
            f"{a}->{b}": (stamps[b] - stamps[a]).total_seconds()
            for a, b in itertools.pairwise(PHASES)
        }
        assert isinstance(deployer, LocalProcessDeployer)
        ui_log = deployer.instance_dir(inst.name) / "ui.log"
        if "member" in inst.handle:
            ui_log = deployer.pool_dir / str(inst.handle["member"]) / "ui.log"
        started = [ln for ln in ui_log.read_text().splitlines() if "idds-vis ui " in ln]
        await agent.teardown(req.key)
        while inst.phase is not Phase.EXPIRED:
            inst = await events.get()
        return elapsed, phases, (started[-1] if started else ""), member_rss
    finally:
        await agent.stop()
        await agent.ledger.close()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    archive = make_demo_archive(work)
    job = work / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(job, filter="data")
    job = job / "output"

    tuned: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    member_rss: list[int] = []
    cold_phases: list[dict[str, float]] = []
    warm_phases: list[dict[str, float]] = []
    ui_lines: list[str] = []
    for i in range(args.runs):  # interleaved, so machine noise hits every variant alike
        t, _rss, _n = bare_server(job, tuned=True)
        tuned.append(t)
        t, ph, line, _ = asyncio.run(idds_vis_run(archive, i, warm=False))
        cold.append(t), cold_phases.append(ph), ui_lines.append(line)
        t, ph, line, rss = asyncio.run(idds_vis_run(archive, i, warm=True))
        warm.append(t), warm_phases.append(ph), member_rss.append(rss), ui_lines.append(line)
        print(f"run {i + 1}: tuned {tuned[-1]:.2f} s, cold {cold[-1]:.2f} s, "
              f"warm {warm[-1]:.2f} s, idle member {member_rss[-1] / MB:.0f} MB",
              flush=True)  # fmt: skip

    med = statistics.median
    print(f"\nmedians of {args.runs} runs")
    print(f"  mlflow server --workers 1 (tuned) start -> /health  {med(tuned):6.2f} s")
    print(f"  idds-vis cold request -> verified ready            {med(cold):6.2f} s")
    print(f"  idds-vis warm request -> verified ready            {med(warm):6.2f} s")
    for name, all_phases in (("cold", cold_phases), ("warm", warm_phases)):
        print(f"  {name} phases (median s): " + ", ".join(
            f"{key} {med(p[key] for p in all_phases):.2f}" for key in all_phases[0]))  # fmt: skip
    print(f"  CPU seconds to ready: tuned bare {med(CPU['tuned']):.2f}, idds-vis cold UI process "
          f"{med(CPU['cold']):.2f} ({med(CPU['cold']) / med(CPU['tuned']):.2f}x)")  # fmt: skip
    for line in ui_lines[-2:]:  # the last cold start and the last hand-over
        print("  UI process, last run: " + line.split("idds-vis ui ")[-1])
    shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT cold_over_tuned={med(cold) / med(tuned):.2f} warm_s={med(warm):.2f} "
          f"idle_member_rss_mb={med(member_rss) / MB:.0f}")  # fmt: skip


MB = 1024 * 1024


if __name__ == "__main__":
    main()
