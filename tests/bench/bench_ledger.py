"""CPU per request in the ledger: the SQLite path against the aiosqlite path it replaced.

Run by hand (not by CI):  python tests/bench/bench_ledger.py [--requests 300] [--runs 5]
                                                            [--postgres]

A relevant message costs the agent one ``submit`` (record + history + audit, in the intake's
commit before the ack) and then, in the pipeline, a ``claim`` and four ``transition``s (staging,
deploying, starting, ready). This runs exactly that against a fresh SQLite ledger file and
prints the CPU time of this process (all its threads) per request, for:

- threads: ``SqlLedger`` as shipped (idds_vis/ledger/runner.py: a sync engine in a writer
  thread, one hop per method);
- aiosqlite: the same methods with the runner forced onto the async engine (aiosqlite: a
  thread hop per cursor call, ``run_sync``), which is how the ledger ran before;
- --postgres adds a throwaway PostgreSQL (tests/pg.py) through asyncpg, with the server's own
  CPU per request beside it.

The two SQLite variants alternate, each run in a fresh process on a fresh file (so each run's
CPU is its own); medians of --runs are printed side by side with the ratio. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idds_vis.domain.models import VisRequest  # noqa: E402
from idds_vis.domain.phases import Phase  # noqa: E402
from idds_vis.ledger.sql import SqlLedger  # noqa: E402

WARM_UP = 20  # requests before the clock starts: imports, compiled-statement caches


async def drive(url: str, requests: int, aiosqlite: bool) -> dict[str, float]:
    ledger = SqlLedger(url)
    if aiosqlite:
        ledger._db._sync = None  # the runner's fallback: the async engine, run_sync
    await ledger.open()
    now = datetime.now(UTC)
    batch = [
        VisRequest(task_id=str(100_000 + i), tool="mlflow", source="s3://bucket/task/mlruns.tgz",
                   ttl=timedelta(hours=24), origin="bench", requested_by="someone")
        for i in range(WARM_UP + requests)
    ]  # fmt: skip

    async def submit(part: list[VisRequest]) -> None:
        for request in part:
            await ledger.submit(request, now, actor="bench")

    async def pipeline() -> int:
        done = 0
        while (inst := await ledger.claim(now, "bench/0")) is not None:
            inst = await ledger.transition(inst.key, Phase.STAGING, now, source=inst.source)
            inst = await ledger.transition(inst.key, Phase.DEPLOYING, now)
            inst = await ledger.transition(inst.key, Phase.STARTING, now, handle={"pid": 1})
            await ledger.transition(inst.key, Phase.READY, now, url="http://ui", expires_at=now)
            done += 1
        return done

    await submit(batch[:WARM_UP])
    await pipeline()
    start = time.process_time()
    await submit(batch[WARM_UP:])
    submitted = time.process_time()
    driven = await pipeline()
    end = time.process_time()
    await ledger.close()
    assert driven == requests, (driven, requests)
    return {"submit_ms": 1e3 * (submitted - start) / requests,
            "pipeline_ms": 1e3 * (end - submitted) / requests}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    figures = asyncio.run(drive(args.url, args.requests, args.child == "aiosqlite"))
    print(json.dumps(figures))


def run_child(variant: str, url: str, requests: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--url", url, "--requests", str(requests)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def postgres_cpu() -> float:
    from tests.pg import server_cpu

    return server_cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--child", choices=("threads", "aiosqlite"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results: dict[str, list[dict[str, float]]] = {"threads": [], "aiosqlite": []}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        for run in range(args.runs):
            for variant in results:
                url = f"sqlite:///{Path(tmp) / f'{variant}-{run}.db'}"
                results[variant].append(run_child(variant, url, args.requests))
        if args.postgres:
            results["postgresql"] = []
            server: list[float] = []
            from tests.pg import throwaway_postgres

            with throwaway_postgres() as base:
                for run in range(args.runs):
                    db = f"bench_ledger_{run}"
                    plain = base.replace("postgresql+asyncpg://", "postgresql://")
                    subprocess.run(["psql", plain, "-qc", f"CREATE DATABASE {db}"], check=True)
                    before = postgres_cpu()
                    url = plain.rsplit("/", 1)[0] + f"/{db}"
                    results["postgresql"].append(run_child("threads", url, args.requests))
                    server.append(1e3 * (postgres_cpu() - before) / (args.requests + WARM_UP))

    def median(variant: str, what: str) -> float:
        return statistics.median(r[what] for r in results[variant])

    print(f"\nledger CPU per request, medians of {args.runs} runs of {args.requests} requests")
    print(f"{'':24s}{'submit':>10s}{'claim + 4 transitions':>24s}{'total':>10s}")
    for variant in results:
        submit, pipeline = median(variant, "submit_ms"), median(variant, "pipeline_ms")
        label = {"threads": "SQLite, threads", "aiosqlite": "SQLite, aiosqlite (before)",
                 "postgresql": "PostgreSQL, asyncpg"}[variant]  # fmt: skip
        print(f"{label:26s}{submit:8.2f} ms{pipeline:21.2f} ms{submit + pipeline:7.2f} ms")
    if args.postgres:
        on_server = statistics.median(server)
        print(f"{'  + the PostgreSQL server':26s}{on_server:37.2f} ms (the whole request)")
    ratio = (median("aiosqlite", "submit_ms") + median("aiosqlite", "pipeline_ms")) / (
        median("threads", "submit_ms") + median("threads", "pipeline_ms")
    )
    print(f"SQLite threads use {1 / ratio:.0%} of the aiosqlite path's CPU ({ratio:.1f}x less)")
    for variant in results:
        spread = ", ".join(f"{r['submit_ms'] + r['pipeline_ms']:.1f}" for r in results[variant])
        print(f"  {variant}: {spread} ms per request")


if __name__ == "__main__":
    main()
