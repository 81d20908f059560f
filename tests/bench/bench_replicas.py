"""Throughput and cost of several agent replicas against one, in the same run.

Run by hand (not by CI):
    python tests/bench/bench_replicas.py [--requests 300] [--replicas 3 1] [--workers 4]

For each replica count, in this order, on a fresh database of one throwaway PostgreSQL server and
one throwaway ActiveMQ broker: that many `idds-vis agent` processes (local deployer, the
stand-in UI of ``ui_stub: true``, so the figures are the agents' and not MLflow's start-up)
consume one virtual-topic queue. Once every replica answers /readyz, --requests vis_request
messages are published at once, and the run ends when all are ready. Printed per run:
- sustained rate: requests reaching ready per second between the 10th and the 90th percentile
  of their ready times (the ramp-up and the tail left out);
- agent CPU per request: user + system CPU of the agent processes over the run (their UIs, the
  broker and the database excluded), divided by --requests;
- agent overhead per request, p50 and p99: from the claim (resolving) to ready, minus the stand-in
  UI's own start-up (from the agent's ``starting`` record, right after the spawn, to the UI's
  listening socket, from the journal the stand-in keeps): resolving, staging, spawning,
  polling for readiness, probing, and the ledger writes;
- queue wait p50/p99 (requested -> claimed), which grows with the burst, for reference.
Afterwards every UI is torn down through the ledger (expiry set to now) and the agents stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idds_vis.domain.models import InstanceKey  # noqa: E402
from idds_vis.domain.phases import Phase  # noqa: E402
from idds_vis.ledger import SqlLedger  # noqa: E402
from tests.activemq import ActiveMQ  # noqa: E402
from tests.integration.test_replicas import publish  # noqa: E402
from tests.mlflow_data import make_file_store  # noqa: E402
from tests.pg import fresh_database, throwaway_postgres  # noqa: E402

CLI = [sys.executable, "-m", "idds_vis"]
HANG_GUARD = 900.0


@dataclass
class Result:
    replicas: int
    rate: float
    cpu_per_request: float
    overhead_p50: float
    overhead_p99: float
    wait_p50: float
    wait_p99: float
    wall: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


async def wait_ready(urls: list[str], procs: list[subprocess.Popen[bytes]]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with asyncio.timeout(HANG_GUARD):
            for url, proc in zip(urls, procs, strict=True):
                while True:
                    assert proc.poll() is None, "an agent exited while starting"
                    try:
                        async with http.get(f"{url}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)


async def run_once(
    replicas: int, requests: int, workers: int, pg_server: str, broker: Any, work: Path
) -> Result:
    run = uuid.uuid4().hex[:8]
    base = work / f"r{replicas}-{run}"
    state, journal, source = base / "state", base / "journal.jsonl", base / "training"
    make_file_store(source)
    topic = f"idds-vis.bench.{run}"
    async with fresh_database(pg_server) as db_url:
        settings = {
            "state_dir": str(state), "database_url": db_url, "workers": workers,
            "ui_stub": True, "default_ttl": "1h", "log_format": "json",
            "stomp_hosts": [f"{broker.host}:{broker.port}"],
            "stomp_subscriptions": [f"/queue/Consumer.idds-vis.VirtualTopic.{topic}"],
            "stomp_relay_queue": f"/queue/idds-vis.bench.relay.{run}",
            "stomp_user": broker.user, "stomp_password": broker.password,
        }  # fmt: skip
        env = dict(os.environ, IDDS_VIS_STUB_JOURNAL=str(journal))
        procs, urls = [], []
        for i in range(replicas):
            port = _free_port()
            config = base / f"agent{i}.yaml"
            config.write_text(yaml.safe_dump({**settings, "web_port": port}))
            log = (base / f"agent{i}.log").open("ab")
            procs.append(subprocess.Popen([*CLI, "--config", str(config), "agent"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=log,
                                          start_new_session=True))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
        ledger = SqlLedger(db_url)
        try:
            await wait_ready(urls, procs)
            await ledger.open()
            tasks = [f"bench-{run}-{i:04d}" for i in range(requests)]
            bodies = [json.dumps({"msg_type": "vis_request", "task_id": t, "tool": "mlflow",
                                  "source": str(source), "ttl": "1h"}) for t in tasks]  # fmt: skip
            pids = [p.pid for p in procs]
            cpu0, wall0 = cpu_seconds(pids), time.monotonic()
            await asyncio.to_thread(publish, broker, f"/topic/VirtualTopic.{topic}", bodies)
            async with asyncio.timeout(HANG_GUARD):
                while True:
                    rows = await ledger.list()
                    failed = [(r.task_id, r.reason) for r in rows if r.phase is Phase.FAILED]
                    assert not failed, failed[:3]
                    if len(rows) == requests and all(r.phase is Phase.READY for r in rows):
                        break
                    await asyncio.sleep(0.5)
            cpu = cpu_seconds(pids) - cpu0
            wall = time.monotonic() - wall0
            result = await measure(ledger, tasks, journal, replicas, cpu / requests, wall)
            # Tear every UI down through the ledger and wait for the reaper.
            now = datetime.now(UTC)
            for row in rows:
                await ledger.set_expiry(InstanceKey(row.task_id), now, now)
            async with asyncio.timeout(HANG_GUARD):
                while not all(r.phase is Phase.EXPIRED for r in await ledger.list()):
                    await asyncio.sleep(0.5)
            return result
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=120)
            await ledger.close()


async def measure(ledger: SqlLedger, tasks: list[str], journal: Path, replicas: int,
                  cpu_per_request: float, wall: float) -> Result:  # fmt: skip
    listening: dict[str, float] = {}
    for line in journal.read_text().splitlines():
        entry = json.loads(line)
        if entry["event"] == "listening":
            listening[entry["name"]] = entry["t"]
    overheads, waits, ready_times = [], [], []
    for task in tasks:
        history = await ledger.history(InstanceKey(task))
        at = {e.phase: e.at for e in history}  # the last of each (a claim is made once here)
        claimed, ready = at[Phase.RESOLVING], at[Phase.READY]
        ui_start = listening[InstanceKey(task).name] - at[Phase.STARTING].timestamp()
        overheads.append((ready - claimed).total_seconds() - ui_start)
        waits.append((claimed - at[Phase.REQUESTED]).total_seconds())
        ready_times.append(ready.timestamp())
    t10, t90 = percentile(ready_times, 0.1), percentile(ready_times, 0.9)
    inside = sum(1 for t in ready_times if t10 <= t <= t90)
    return Result(
        replicas=replicas,
        rate=(inside - 1) / (t90 - t10),
        cpu_per_request=cpu_per_request,
        overhead_p50=statistics.median(overheads),
        overhead_p99=percentile(overheads, 0.99),
        wait_p50=statistics.median(waits),
        wait_p99=percentile(waits, 0.99),
        wall=wall,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--replicas", type=int, nargs="+", default=[3, 1])
    parser.add_argument("--workers", type=int, default=4, help="pipeline workers per agent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idds-vis-bench-") as tmp:
        work = Path(tmp)
        broker = ActiveMQ(work / "activemq")
        broker.start()
        try:
            with throwaway_postgres() as pg_server:
                results = []
                for count in args.replicas:
                    result = await run_once(count, args.requests, args.workers, pg_server,
                                            broker.address, work)  # fmt: skip
                    results.append(result)
                    print(f"{count} replica(s) done in {result.wall:.1f} s", flush=True)
        finally:
            broker.stop()
    print(f"\n{args.requests} requests, {args.workers} workers per agent, "
          f"{os.cpu_count()} CPUs, stand-in UIs")  # fmt: skip
    print(f"{'replicas':>8} {'ready/s':>8} {'CPU/req':>9} {'overhead p50':>13} "
          f"{'p99':>7} {'queue wait p50':>15} {'p99':>7} {'wall':>7}")  # fmt: skip
    for r in results:
        print(f"{r.replicas:>8} {r.rate:>8.2f} {r.cpu_per_request * 1000:>7.1f}ms "
              f"{r.overhead_p50:>12.3f}s {r.overhead_p99:>6.3f}s {r.wait_p50:>14.1f}s "
              f"{r.wait_p99:>6.1f}s {r.wall:>6.1f}s")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
