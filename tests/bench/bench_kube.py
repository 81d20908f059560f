"""Agent cost on Kubernetes, against the API emulator running in its own process.

Run by hand (not by CI):  python tests/bench/bench_kube.py [--launch 1000] [--reconcile 10000]

1. Launch: the real agent (Kubernetes deployer, SQLite ledger; stager and public-URL probe stood
   in for, as there is no ingress here) takes --launch requests to ready. Prints the agent's CPU
   seconds (this process only; the emulator is another process) and wall time, per instance too.
2. Reconcile: --reconcile ready instances are seeded (ledger rows, and in the emulator the objects
   our builders make, with ready pods); one reconcile pass is timed (agent CPU) and the agent's RSS
   with that many live rows is read. Baseline in the same run: the same list call made the plain
   way (kubernetes-asyncio models), to show what reading raw JSON saves.
Targets (issue 4): reconcile of 10,000 in <= 2 s agent CPU; RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idds_vis.agent.service import Agent  # noqa: E402
from idds_vis.domain.models import VisRequest  # noqa: E402
from idds_vis.domain.phases import Phase  # noqa: E402
from idds_vis.runtime.config import Settings  # noqa: E402
from idds_vis.runtime.wiring import build_deployer, build_ledger  # noqa: E402
from tests.fakes import FakeProbe, FakeStager, SystemClock  # noqa: E402

NS = "bench"

SEEDER = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from tests.k8s_emulator import KubeEmulator
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from datetime import datetime, timezone, timedelta

async def main():
    kubeconfig, count = sys.argv[2], int(sys.argv[3])
    async with KubeEmulator() as emu:
        emu.write_kubeconfig(kubeconfig, "bench")
        ks = KubeSettings(namespace="bench")
        now = datetime.now(timezone.utc)
        for i in range(count):
            task = f"seed-{i}"
            inst = Instance(task_id=task, tool="mlflow", name=InstanceKey(task).name,
                            phase=Phase.READY, source="x", ttl=timedelta(hours=24),
                            created_at=now, updated_at=now, expires_at=now + timedelta(hours=24))
            emu.create(objects.deployment(inst, ks, "x", inst.expires_at, False), "bench")
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_emulator(workdir: Path, seed: int) -> tuple[subprocess.Popen[str], Path]:
    kubeconfig = workdir / f"kubeconfig-{seed}"
    proc = subprocess.Popen([sys.executable, "-c", SEEDER, str(ROOT), str(kubeconfig), str(seed)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, kubeconfig


def agent_for(workdir: Path, kubeconfig: Path, name: str) -> Agent:
    settings = Settings(state_dir=workdir / name, deployer="kubernetes", namespace=NS,
                        kubeconfig=str(kubeconfig), workers=16)  # fmt: skip
    return Agent(ledger=build_ledger(settings), stager=FakeStager(),
                 deployer=build_deployer(settings), probe=FakeProbe(), clock=SystemClock(),
                 workers=16, poll_interval=0.05)  # fmt: skip


async def launch(workdir: Path, count: int) -> None:
    emulator, kubeconfig = start_emulator(workdir, 0)
    agent = agent_for(workdir, kubeconfig, "launch")
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
              f"wall {wall:.1f} s, failed {failed}")  # fmt: skip
    finally:
        await agent.stop()
        await agent.ledger.close()
        await agent.deployer.kube.close()  # type: ignore[attr-defined]
        emulator.kill()


async def reconcile(workdir: Path, count: int) -> None:
    emulator, kubeconfig = start_emulator(workdir, count)
    agent = agent_for(workdir, kubeconfig, "reconcile")
    ledger = agent.ledger
    try:
        await ledger.open()
        now = datetime.now(UTC)
        for i in range(count):  # seed the ledger: the same instances, ready
            req = VisRequest(f"seed-{i}", source="x")
            await ledger.submit(req, now)
            await ledger.claim(now, "seed")
            for phase in (Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
                await ledger.transition(req.key, phase, now)
            await ledger.transition(req.key, Phase.READY, now,
                                    expires_at=now + timedelta(hours=24))  # fmt: skip
        from kubernetes_asyncio import client

        api = await agent.deployer.kube.api()  # type: ignore[attr-defined]
        cpu0 = time.process_time()
        models = await client.AppsV1Api(api).list_namespaced_deployment(NS)
        plain = time.process_time() - cpu0
        del models
        cpu0 = time.process_time()
        report = await agent.reconciler.reconcile(startup=False)
        cpu = time.process_time() - cpu0
        print(f"reconcile {count}: agent CPU {cpu:.2f} s (target <= 2 s); adopted "
              f"{len(report.adopted)}, removed {len(report.removed_orphans)}, restarted "
              f"{len(report.restarted)}")  # fmt: skip
        print(f"  baseline in the same run: listing {count} Deployments as kubernetes-asyncio "
              f"models alone costs {plain:.2f} s CPU")  # fmt: skip
        print(f"  agent max RSS with {count} live rows: {rss_mb():.0f} MB (target <= 300 MB)")
    finally:
        await agent.deployer.kube.close()  # type: ignore[attr-defined]
        await ledger.close()
        emulator.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch", type=int, default=1000)
    parser.add_argument("--reconcile", type=int, default=10000)
    args = parser.parse_args()
    os.environ.setdefault("IDDS_VIS_BENCH", "1")
    workdir = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    asyncio.run(launch(workdir, args.launch))
    asyncio.run(reconcile(workdir, args.reconcile))
    print(json.dumps({"workdir": str(workdir)}))


if __name__ == "__main__":
    main()
