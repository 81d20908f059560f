"""Agent cost on Kubernetes, against the API emulator running in its own process.

Run by hand (not by CI):
    python tests/bench/bench_kube.py [--launch 1000] [--reconcile 10000] [--passes 3] [--profile]

Each phase runs in a fresh agent process, so one phase's memory does not show in the next's RSS.
1. Launch: the real agent (Kubernetes deployer, SQLite ledger; stager and public-URL probe stood
   in for, as there is no ingress here) takes --launch requests to ready. Prints the agent's CPU
   seconds (the agent process only; the emulator is another process) and wall time.
2. Reconcile: --reconcile ready instances are seeded by the emulator's process before the agent
   starts: in the emulator the objects our builders make (Deployment with its Ready pod and
   status; Service, Ingress, NetworkPolicy owned by it) through `KubeEmulator.seed`, and in the
   ledger the rows and phase log the pipeline leaves (bulk INSERTs). The agent then runs
   --passes reconcile passes, each timed (agent CPU, wall); then its peak and current RSS are
   read. After that, --profile runs one more pass under cProfile (CPU time), and the baseline
   runs in the same process: the same list call made the plain way (kubernetes-asyncio models).
   --gc-freeze: gc.freeze() in the agent before the passes (a candidate change for the agent).
Targets (issue 4): reconcile of 10,000 in <= 2 s agent CPU; RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idds_vis.agent.clock import SystemClock  # noqa: E402
from idds_vis.agent.service import Agent  # noqa: E402
from idds_vis.deploy.kubernetes import objects  # noqa: E402
from idds_vis.domain.expiry import DEFAULT_TTL  # noqa: E402
from idds_vis.domain.models import DEFAULT_TOOL, Instance, InstanceKey, VisRequest  # noqa: E402
from idds_vis.domain.phases import Phase  # noqa: E402
from idds_vis.runtime.config import Settings  # noqa: E402
from idds_vis.runtime.wiring import build_deployer, build_ledger  # noqa: E402
from tests.fakes import FakeProbe, FakeStager  # noqa: E402

NS = "bench"
# The phases a ready instance went through, as its phase log records them.
HISTORY = (Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING, Phase.DEPLOYING, Phase.STARTING,
           Phase.READY)  # fmt: skip


def settings_for(workdir: Path, name: str) -> Settings:
    return Settings(state_dir=workdir / name, deployer="kubernetes", namespace=NS,
                    kubeconfig=str(workdir / f"kubeconfig-{name}"), workers=16)  # fmt: skip


def proc_status_mb(field: str) -> float:
    """VmHWM (peak RSS) or VmRSS (now) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


# -- the emulator process ------------------------------------------------------------------


def ready_instances(count: int, now: datetime) -> list[Instance]:
    out = []
    for i in range(count):
        task = f"seed-{i}"
        out.append(Instance(task_id=task, tool=DEFAULT_TOOL, name=InstanceKey(task).name,
                            phase=Phase.READY, source=f"https://example.org/tasks/{task}.tar.gz",
                            ttl=DEFAULT_TTL, created_at=now, updated_at=now, attempt=1,
                            origin="cli", expires_at=now + DEFAULT_TTL))  # fmt: skip
    return out


async def seed_ledger(settings: Settings, insts: list[Instance], uids: dict[str, str]) -> None:
    """The rows and phase log the pipeline leaves for ready instances, in bulk INSERTs."""
    from idds_vis.ledger.engine import make_engine
    from idds_vis.ledger.schema import events, instances
    from idds_vis.ledger.urls import parse_async_url

    ledger = build_ledger(settings)
    await ledger.open()  # the schema, as the agent makes it
    await ledger.close()
    ks = build_deployer(settings).ks  # type: ignore[attr-defined]
    rows, log = [], []
    for inst in insts:
        made = [{"kind": "Deployment", "name": inst.name}] + [
            {"kind": kind, "name": inst.name} for kind in ("Service", "Ingress", "NetworkPolicy")
        ]
        rows.append({
            "task_id": inst.task_id, "tool": inst.tool, "name": inst.name, "phase": "ready",
            "source": inst.source, "ttl_seconds": inst.ttl.total_seconds(),
            "url": objects.public_url(inst, ks), "expires_at": inst.expires_at, "reason": None,
            "handle": {"namespace": NS, "uid": uids[inst.name], "objects": made},
            "attempt": 1, "origin": inst.origin, "requested_by": None,
            "claimed_by": "bench-agent/0", "created_at": inst.created_at,
            "updated_at": inst.updated_at,
        })  # fmt: skip
        log += [{"task_id": inst.task_id, "tool": inst.tool, "attempt": 1, "phase": p.value,
                 "at": inst.created_at, "reason": None} for p in HISTORY]  # fmt: skip
    engine = make_engine(parse_async_url(settings.db_url))
    async with engine.begin() as conn:
        await conn.execute(instances.insert(), rows)
        await conn.execute(events.insert(), log)
    await engine.dispose()


async def serve_emulator(workdir: Path, name: str, count: int) -> None:
    """Start the emulator, seed it and the ledger with `count` ready instances, then serve."""
    from tests.k8s_emulator import KubeEmulator

    settings = settings_for(workdir, name)
    async with KubeEmulator() as emu:
        emu.write_kubeconfig(settings.kubeconfig or "", NS)
        ks = build_deployer(settings).ks  # type: ignore[attr-defined]
        insts = ready_instances(count, datetime.now(UTC))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        roots = emu.seed((objects.deployment(inst, ks, inst.source or "", inst.expires_at, False)
                          for inst in insts), NS)  # fmt: skip
        emu.seed((dep for inst, root in zip(insts, roots, strict=True)
                  for dep in objects.dependents(inst, ks, root, None)), NS)  # fmt: skip
        await asyncio.sleep(0)  # the one garbage-collector sweep the seed scheduled
        emu_cpu, emu_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if count:
            uids = {root["metadata"]["name"]: root["metadata"]["uid"] for root in roots}
            await seed_ledger(settings, insts, uids)
        db_cpu, db_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        stats = {"objects": emu.resource_version, "emulator_cpu": emu_cpu,
                 "emulator_wall": emu_wall, "ledger_cpu": db_cpu, "ledger_wall": db_wall,
                 "rss_mb": proc_status_mb("VmRSS")}  # fmt: skip
        del roots, insts
        print("ready " + json.dumps(stats), flush=True)
        await asyncio.Event().wait()


def start_emulator(
    workdir: Path, name: str, seed: int
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, __file__, "--serve-emulator", name, "--workdir", str(workdir),
           "--reconcile", str(seed)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("ready "), line
    return proc, json.loads(line.removeprefix("ready "))


# -- the agent process ---------------------------------------------------------------------


def agent_for(settings: Settings) -> Agent:
    return Agent(ledger=build_ledger(settings), stager=FakeStager(),
                 deployer=build_deployer(settings), probe=FakeProbe(), clock=SystemClock(),
                 workers=16, poll_interval=0.05, agent_id="bench-agent")  # fmt: skip


async def launch(workdir: Path, count: int) -> None:
    emulator, _ = start_emulator(workdir, "launch", 0)
    agent = agent_for(settings_for(workdir, "launch"))
    events = agent.events.subscribe()
    try:
        await agent.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(count):
            await agent.submit(VisRequest(f"launch-{i}", source="https://example/x"))
        done = 0
        while done < count:
            inst = await events.get()
            if inst.phase in (Phase.READY, Phase.FAILED):
                done += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        failed = len(await agent.ledger.list([Phase.FAILED]))
        print(f"launch {count}: agent CPU {cpu:.1f} s ({cpu / count * 1000:.1f} ms each), "
              f"wall {wall:.1f} s, failed {failed}; agent peak RSS "
              f"{proc_status_mb('VmHWM'):.0f} MB")  # fmt: skip
    finally:
        await agent.stop()
        await agent.ledger.close()
        await agent.deployer.kube.close()  # type: ignore[attr-defined]
        emulator.kill()


async def reconcile(workdir: Path, count: int, passes: int, profile: bool, gc_freeze: bool) -> None:
    wall0 = time.perf_counter()
    emulator, seeded = start_emulator(workdir, "reconcile", count)
    print(f"seeded {count} ready instances ({seeded['objects']} API objects incl. pods) in "
          f"{time.perf_counter() - wall0:.1f} s wall: emulator seed {seeded['emulator_cpu']:.1f} s "
          f"CPU ({seeded['emulator_wall']:.1f} s wall), ledger bulk insert "
          f"{seeded['ledger_cpu']:.1f} s CPU ({seeded['ledger_wall']:.1f} s wall); emulator RSS "
          f"{seeded['rss_mb']:.0f} MB")  # fmt: skip
    agent = agent_for(settings_for(workdir, "reconcile"))
    try:
        await agent.ledger.open()
        if gc_freeze:  # what the agent would do once it is wired up: see --help
            gc.freeze()
        cpus = []
        for n in range(passes):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            report = await agent.reconciler.reconcile(startup=n == 0)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            cpus.append(cpu)
            print(f"reconcile {count} (pass {n + 1}{', start-up' if n == 0 else ''}): agent CPU "
                  f"{cpu:.2f} s, wall {wall:.2f} s; adopted {len(report.adopted)}, removed "
                  f"{len(report.removed_orphans)}, restarted {len(report.restarted)}")  # fmt: skip
        print(f"  median of {passes} passes: {statistics.median(cpus):.2f} s agent CPU "
              "(target <= 2 s)")  # fmt: skip
        print(f"  agent RSS with {count} live rows: peak {proc_status_mb('VmHWM'):.0f} MB, "
              f"now {proc_status_mb('VmRSS'):.0f} MB (target <= 300 MB)")  # fmt: skip
        if profile:  # an extra pass, not counted: the profiler slows what it measures
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            await agent.reconciler.reconcile(startup=False)
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(15)
            stats.sort_stats("cumulative").print_stats(25)
        from kubernetes_asyncio import client

        api = await agent.deployer.kube.api()  # type: ignore[attr-defined]
        cpu0 = time.process_time()
        models = await client.AppsV1Api(api).list_namespaced_deployment(
            NS, label_selector="app.kubernetes.io/managed-by=idds-vis"
        )
        plain = time.process_time() - cpu0
        print(f"  baseline in the same run: listing {len(models.items)} Deployments as "
              f"kubernetes-asyncio models alone costs {plain:.2f} s CPU (peak RSS then "
              f"{proc_status_mb('VmHWM'):.0f} MB)")  # fmt: skip
        del models
    finally:
        await agent.deployer.kube.close()  # type: ignore[attr-defined]
        await agent.ledger.close()
        emulator.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch", type=int, default=1000)
    parser.add_argument("--reconcile", type=int, default=10000)
    parser.add_argument("--passes", type=int, default=3, help="reconcile passes to time")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra pass")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() in the agent before the reconcile passes, so the cyclic collector "
        "no longer walks the objects of the agent's start-up on every full collection",
    )
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("launch", "reconcile"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-emulator", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("IDDS_VIS_BENCH", "1")
    if args.serve_emulator:
        asyncio.run(serve_emulator(args.workdir, args.serve_emulator, args.reconcile))
    elif args.phase == "launch":
        asyncio.run(launch(args.workdir, args.launch))
    elif args.phase == "reconcile":
        asyncio.run(
            reconcile(args.workdir, args.reconcile, args.passes, args.profile, args.gc_freeze)
        )
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-kube-"))
        base = [sys.executable, __file__, "--workdir", str(workdir), "--launch", str(args.launch),
                "--reconcile", str(args.reconcile), "--passes", str(args.passes),
                *(["--profile"] if args.profile else []),
                *(["--gc-freeze"] if args.gc_freeze else [])]  # fmt: skip
        for phase, count in (("launch", args.launch), ("reconcile", args.reconcile)):
            if count:  # each phase in a fresh agent process
                subprocess.run([*base, "--phase", phase], check=True)
        print(json.dumps({"workdir": str(workdir)}))


if __name__ == "__main__":
    main()
