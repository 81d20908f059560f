"""Time-to-URL and UI memory, side by side with plain ``mlflow server`` on the same data.

Run by hand (not by CI):  python tests/bench/bench_time_to_url.py [--runs 5]

For each run it measures, on the demo's real training output:
- idds-vis: request -> ready through the real pipeline (staging, store preparation, UI start,
  the full readiness probe), with the per-phase breakdown from the ledger's timestamps, and the
  RSS of the UI's process tree once ready;
- the tuned bare server (``mlflow server --workers 1``, job runner off): start -> /health 200;
- the default server (``mlflow server``): start -> /health 200, and its process-tree RSS.
It prints medians and the ratios the targets are stated in. It asserts nothing.
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
        time.sleep(3)  # let workers and the job runner finish starting before reading memory
        rss = tree_rss(proc.pid)
        count = 1 + len(psutil.Process(proc.pid).children(recursive=True))
        return elapsed, rss, count
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


async def idds_vis_run(archive: Path, index: int) -> tuple[float, dict[str, float], int, int]:
    state = Path(tempfile.mkdtemp(prefix="bench-idds-vis-"))
    agent = build_agent(Settings(state_dir=state, workers=1))
    events = agent.events.subscribe()
    await agent.start()
    try:
        req = VisRequest(f"bench-{index}-{os.getpid()}", source=str(archive))
        t0 = time.perf_counter()
        await agent.submit(req)
        while True:
            inst = await events.get()
            if inst.task_id == req.task_id and inst.phase in (Phase.READY, Phase.FAILED):
                break
        elapsed = time.perf_counter() - t0
        if inst.phase is Phase.FAILED:
            raise SystemExit(f"failed: {inst.reason}")
        history = await agent.ledger.history(req.key)
        stamps = {e.phase.value: e.at for e in history}
        order = ["requested", "resolving", "staging", "deploying", "starting", "ready"]
        phases = {
            f"{a}->{b}": (stamps[b] - stamps[a]).total_seconds()
            for a, b in itertools.pairwise(order)
        }
        pid = int(inst.handle["pid"])
        time.sleep(3)
        rss = tree_rss(pid)
        count = 1 + len(psutil.Process(pid).children(recursive=True))
        await agent.teardown(req.key)
        while inst.phase is not Phase.EXPIRED:
            inst = await events.get()
        return elapsed, phases, rss, count
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

    ours, phases_all, our_rss, our_procs = [], [], [], []
    tuned, tuned_rss = [], []
    default, default_rss, default_procs = [], [], []
    for i in range(args.runs):  # interleaved, so machine noise hits every variant alike
        t, ph, rss, n = asyncio.run(idds_vis_run(archive, i))
        ours.append(t), phases_all.append(ph), our_rss.append(rss), our_procs.append(n)
        t, rss, _ = bare_server(job, tuned=True)
        tuned.append(t), tuned_rss.append(rss)
        t, rss, n = bare_server(job, tuned=False)
        default.append(t), default_rss.append(rss), default_procs.append(n)
        print(f"run {i + 1}: idds-vis {ours[-1]:.2f} s, tuned {tuned[-1]:.2f} s, "
              f"default {default[-1]:.2f} s", flush=True)  # fmt: skip

    med = statistics.median
    mb = 1024 * 1024
    print(f"\nmedians of {args.runs} runs")
    print(f"{'':38} {'seconds':>8} {'RSS MB':>8} {'procs':>6}")
    print(f"{'idds-vis request -> ready (full probe)':38} {med(ours):8.2f} "
          f"{med(our_rss) / mb:8.0f} {med(our_procs):6.0f}")  # fmt: skip
    print(f"{'mlflow server --workers 1, no jobs':38} {med(tuned):8.2f} {med(tuned_rss) / mb:8.0f}")
    print(f"{'mlflow server (defaults)':38} {med(default):8.2f} "
          f"{med(default_rss) / mb:8.0f} {med(default_procs):6.0f}")  # fmt: skip
    print("\nidds-vis phase breakdown (median s):")
    for key in phases_all[0]:
        print(f"  {key:24} {med(p[key] for p in phases_all):6.2f}")
    print(f"\ntime-to-URL / tuned bare start: {med(ours) / med(tuned):.2f}x (target <= 1.5x)")
    print(f"UI RSS / default server RSS:    {med(our_rss) / med(default_rss):.1%} (target <= 25%)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
