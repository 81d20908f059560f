"""Intake rate: the agent's STOMP intake side by side with a bare stomp.py consumer.

Run by hand (not by CI):  python tests/bench/bench_intake.py [--messages 20000] [--runs 5]

A private ActiveMQ (tests/activemq.py) is started by the script. Before every drain, --messages
messages are loaded onto a fresh queue (persistent, each SEND receipted, so they are stored):
99 % irrelevant-but-valid traffic of the kind the real stream carries (PanDA job_status and
non-final task_status, iDDS work_processing not Finished, other iDDS message types) and 1 %
``vis_request`` messages with an artefact source (each becomes a ledger record). The same bodies,
in the same order, are drained by:

- bare: a stomp.py Connection12 consumer that only acknowledges (client-individual, the
  agent's prefetch), acking on stomp.py's receiver thread;
- agent: the production intake and agent (``build_intake`` and ``build_agent``, as
  ``idds-vis agent`` builds them: StompSource, Intake, its resolver and metrics hook, an Agent on
  a SQLite ledger), the agent started, so its workers take each committed request through the
  pipeline. As by default, the stream is relayed (``stomp_relay_queue``, a queue of the drain's
  own): the receiver process acks it cumulatively and copies the relevant messages to the relay
  queue, which the intake reads; with --direct the agent reads the stream itself, one ack per
  message. Stager, deployer and probe are the stand-ins of tests/fakes.py, so no UI starts, but
  every ledger write is real;
- intake: the same, with the Agent not started: ``submit`` commits to the ledger, no worker runs,
  so this is the intake's own cost without the pipeline's.

Each drain runs in a child process of its own (so its CPU is its own). The rate is timed, for
both consumers alike, from the receipt of the SUBSCRIBE to the moment the last message is acked
(for the agent: every ignored one acked, and every relevant one committed and its message acked):
the intake's rate, not its start-up. The start-up before it (connect and subscribe; for the agent
also spawning its receiver process, whose interpreter and imports take about 0.25 s of CPU) is
printed in a column of its own. Every drain is checked afterwards: the queue and the relay
queue are empty when browsed, the dead-letter queue too, and the ledger holds one record per
relevant message.
Runs are interleaved, the order turning each round (bare, agent, intake; agent, intake, bare;
...), after one untimed warm-up round. It prints the medians, the ratio against the 80 % target,
each round's ratio, and CPU seconds per 1,000 messages. It asserts
nothing; --profile FILE also writes a cProfile of one extra agent drain (the event-loop thread,
by thread CPU time). --postgres puts the ledger on a throwaway PostgreSQL (tests/pg.py), a fresh
database per drain, and prints the server's CPU per message beside the broker's (it includes
each database's CREATE TABLEs and backend start-up). Threads by group: stomp.py's receiver
(here, or the agent's receiver process), the event loop, the ledger's own threads (SQLite),
aiosqlite's (the lease store), ``to_thread`` workers, the receiver-process reader.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import stomp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idds_vis.agent.intake import Outcome  # noqa: E402
from idds_vis.agent.service import Agent  # noqa: E402
from idds_vis.ports.source import Delivery  # noqa: E402
from idds_vis.runtime import wiring  # noqa: E402
from idds_vis.runtime.config import Settings  # noqa: E402
from tests.activemq import ActiveMQ, BrokerAddress, connect_collector  # noqa: E402
from tests.fakes import FakeDeployer, FakeProbe, FakeStager  # noqa: E402
from tests.message_fixtures import fixture_body  # noqa: E402

PREFETCH = 1000  # StompSettings.prefetch's default, for both consumers (--prefetch)
HEARTBEATS = (10_000, 10_000)  # StompSettings.heartbeats' default
ROLES = ("bare", "agent", "intake")
HANG_GUARD = 600.0  # seconds; only reached when something is broken
IDDS_HEADERS = {"vo": "atlas", "from_idds": "true", "msg_type": "messagetype.processingwork",
                "ttl": "43200000", "priority": "4"}  # fmt: skip

# -- the stream ------------------------------------------------------------------------------

PANDA_RUNNING = ["defined", "assigning", "ready", "pending", "scouting", "running", "prepared",
                 "throttled", "finishing", "toretry", "exhausted"]  # fmt: skip
JOB_STATUSES = ["activated", "sent", "starting", "running", "holding", "transferring",
                "finished", "failed", "closed", "cancelled"]  # fmt: skip
IDDS_NOT_FINISHED = ["New", "Ready", "Transforming", "Running", "SubFinished", "Failed",
                     "Cancelled", "Suspended", "Expired"]  # fmt: skip
IDDS_OTHER = ["file_processing", "collection_processing", "work_stagein", "health_heartbeat",
              "file_hyperparameteropt", "collection_stagein"]  # fmt: skip


def irrelevant(rng: random.Random, i: int) -> tuple[dict[str, str], dict[str, Any]]:
    """One message of the stream that starts nothing; the mix leans on job_status, as PanDA's."""
    roll = rng.random()
    if roll < 0.50:
        body = fixture_body("panda_job_status_finished.json")
        body.update(jobid=6_000_000_000 + i, taskid=40_000_000 + i % 5000,
                    status=rng.choice(JOB_STATUSES), computingsite=f"SITE_{i % 37}")  # fmt: skip
        return {}, body
    if roll < 0.75:
        return {}, {"msg_type": "task_status", "taskid": 40_000_000 + i % 5000,
                    "status": rng.choice(PANDA_RUNNING), "timestamp": 1795297866 + i}  # fmt: skip
    if roll < 0.87:
        body = fixture_body("idds_work_processing_finished.json")
        body.update(request_id=1000 + i % 700, workload_id=40_000_000 + i % 5000,
                    transform_id=i % 9000 + 1, status=rng.choice(IDDS_NOT_FINISHED))  # fmt: skip
        return IDDS_HEADERS, body
    kind = rng.choice(IDDS_OTHER)
    body = {"msg_type": kind, "request_id": 1000 + i % 700, "workload_id": 40_000_000 + i % 5000,
            "relation_type": "output",
            "files": [{"scope": "user.someone", "name": f"log.{i}.tgz", "status": "Available",
                       "path": None}]}  # fmt: skip
    return IDDS_HEADERS, body


def relevant(i: int) -> tuple[dict[str, str], dict[str, Any]]:
    return {}, {"msg_type": "vis_request", "task_id": f"bench-{i}", "tool": "mlflow",
                "source": f"http://127.0.0.1:9/idds/downloadhpometrics/?workloadid={i}",
                "ttl": "24h"}  # fmt: skip


def make_stream(count: int, every: int, seed: int = 11) -> list[tuple[dict[str, str], bytes]]:
    """``count`` messages, one in ``every`` relevant, spread through the stream."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        headers, body = relevant(i) if i % every == every // 2 else irrelevant(rng, i)
        out.append((headers, json.dumps(body).encode()))
    return out


# -- the broker side: loading and browsing -----------------------------------------------------




def load(address: BrokerAddress, destination: str,
         stream: list[tuple[dict[str, str], bytes]]) -> float:  # fmt: skip
    """Send persistently, pipelined; return once the broker has receipted (stored) every one."""
    conn, collector = connect_collector(address)
    start = time.perf_counter()
    try:
        for n, (headers, body) in enumerate(stream):
            extra = {**headers, "persistent": "true", "receipt": f"load-{n}"}
            conn.send(destination, body, headers=extra)
        for _ in stream:
            collector.receipts.get(timeout=HANG_GUARD)
    finally:
        conn.disconnect()
    return time.perf_counter() - start


def browse(address: BrokerAddress, destination: str) -> int:
    """How many messages the queue still holds, delivered-but-unacked ones included."""
    conn, collector = connect_collector(address)
    try:
        conn.subscribe(destination, "browse", ack="auto", headers={"browser": "true"})
        count = 0
        while True:
            headers, _ = collector.messages.get(timeout=HANG_GUARD)
            if headers.get("browser") == "end":
                return count
            count += 1
    finally:
        conn.disconnect()


# -- the consumers (each in a child process: python bench_intake.py --role ...) ---------------

# Thread groups of a consumer process, by the thread's Python name (first match wins).
# The agent's stomp.py threads run in its receiver process (idds_vis/sources/stomp_remote.py):
# that process's CPU is counted as "receiver", its event reader here as "reader".
THREAD_GROUPS = (("receiver", "__io_loop"), ("loop", "MainThread"), ("heartbeat", "heartbeat"),
                 ("ledger", "idds-vis-ledger"), ("aiosqlite", "_connection_worker"),
                 ("to_thread", "asyncio_"),
                 ("reader", "stomp-remote-reader"))  # fmt: skip


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each group of this process's threads (Linux /proc), so a drain
    shows where its CPU went: stomp.py's receiver thread, the event loop, the rest."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "")
        group = next((g for g, part in THREAD_GROUPS if part in name), "other")
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu() -> float:
    """CPU seconds so far of this process's children (the agent's STOMP receiver process)."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {g: round(after[g] - before.get(g, 0.0), 3) for g in after}


class Receipts:
    """A stomp.py listener's receipts: its SUBSCRIBE's (the clock starts) and its DISCONNECT's
    (the broker has handled every ack; stomp.py's ``disconnect`` does not wait for it)."""

    def __init__(self) -> None:
        self.subscribed, self.disconnected = threading.Event(), threading.Event()

    def on_receipt(self, frame: Any) -> None:
        self.subscribed.set()

    def on_disconnected(self) -> None:
        self.disconnected.set()


def bare_drain(address: BrokerAddress, destination: str, expect: int) -> dict[str, Any]:
    done = threading.Event()
    seen = 0

    class Acker(Receipts):
        def on_message(self, frame: Any) -> None:
            nonlocal seen
            conn.ack(frame.headers["ack"])
            seen += 1
            if seen == expect:
                done.set()

    acker = Acker()
    subscribed, disconnected = acker.subscribed, acker.disconnected
    begun = time.perf_counter()
    conn = stomp.Connection12([(address.host, address.port)], heartbeats=HEARTBEATS,
                              auto_decode=False)  # fmt: skip
    conn.set_listener("bare", acker)
    conn.connect(address.user, address.password, wait=True)
    # As the agent subscribes: with a receipt, and the clock starts once it is in.
    window = {"activemq.prefetchSize": str(PREFETCH), "receipt": "bare-0"}
    conn.subscribe(destination, "bare-0", ack="client-individual", headers=window)
    if not subscribed.wait(HANG_GUARD):
        raise SystemExit("bare consumer: no receipt for its SUBSCRIBE")
    cpu0, t0, threads0 = time.process_time(), time.perf_counter(), thread_cpu()
    if not done.wait(HANG_GUARD):
        raise SystemExit(f"bare consumer saw {seen} of {expect} messages")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    threads = cpu_delta(threads0, thread_cpu())
    conn.disconnect()  # with a receipt, which comes once the broker has handled every ack
    if not disconnected.wait(HANG_GUARD):
        raise SystemExit("bare consumer: no receipt for its DISCONNECT")
    return {"wall": wall, "cpu": cpu, "messages": seen, "threads": threads,
            "startup": t0 - begun, "startup_cpu": 0.0}  # fmt: skip


def production_agent(settings: Settings) -> Agent:
    """``build_agent`` as the CLI calls it, with the stager, deployer and probe of tests/fakes.py
    put in its place (in this child process only): no download, no UI, everything else real."""
    fakes = {
        "ArchiveStager": lambda **_: FakeStager(),
        "build_deployer": lambda *_: FakeDeployer(settings.state_dir / "instances"),
        "HttpReadinessProbe": FakeProbe,
    }
    for name, fake in fakes.items():
        if not hasattr(wiring, name):
            raise SystemExit(f"idds_vis.runtime.wiring has no {name} any more: update this bench")
        setattr(wiring, name, fake)
    return wiring.build_agent(settings)


def relay_of(destination: str) -> str | None:
    """The drain's own relay queue (None with --direct)."""
    return None if DIRECT else f"{destination}.relay"


async def agent_drain(address: BrokerAddress, destination: str, expect: int, state: Path,
                      dlq: str, started: bool,
                      database_url: str | None = None) -> dict[str, Any]:  # fmt: skip
    settings = Settings(
        state_dir=state,
        database_url=database_url,
        stomp_hosts=[f"{address.host}:{address.port}"],
        stomp_subscriptions=[destination],
        stomp_user=address.user,
        stomp_password=address.password,
        stomp_dead_letter=dlq,
        stomp_relay_queue=relay_of(destination),
        stomp_prefetch=PREFETCH,
    )
    agent = production_agent(settings)
    built = wiring.build_intake(settings, agent)
    assert built is not None
    source, intake = built
    counts: Counter[str] = Counter()
    done = asyncio.Event()

    production_hook = intake.on_outcome  # the agent's metrics: part of the cost measured
    production_fast = intake.on_fast_ignore  # the same for what is acked in the receiver process
    loop = asyncio.get_running_loop()
    lock = threading.Lock()  # counted from the loop and from the receiver events thread

    def count(outcome: str, n: int = 1) -> None:
        with lock:
            counts[outcome] += n
            if counts.total() == expect:
                loop.call_soon_threadsafe(done.set)

    def hook(delivery: Delivery, outcome: Outcome, detail: str) -> None:
        if production_hook is not None:
            production_hook(delivery, outcome, detail)
        count(outcome.value)

    def fast(n: int) -> None:
        if production_fast is not None:
            production_fast(n)
        count(Outcome.IGNORED.value, n)

    intake.on_outcome = hook
    intake.on_fast_ignore = fast
    if started:
        await agent.start()
    else:
        await agent.ledger.open()
    begun = time.perf_counter()
    await source.start()
    async with asyncio.timeout(HANG_GUARD):
        await source.wait_connected()  # the receiver process is up, connected and subscribed
    cpu0, t0, threads0 = time.process_time(), time.perf_counter(), thread_cpu()
    receiver0 = children_cpu()  # its start-up: interpreter, imports, connect
    consumer = asyncio.create_task(intake.run())
    async with asyncio.timeout(HANG_GUARD):
        await done.wait()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    threads = cpu_delta(threads0, thread_cpu())
    receiver = children_cpu() - receiver0
    threads["receiver"] = round(threads.get("receiver", 0.0) + receiver, 3)
    cpu += receiver
    await source.stop()  # DISCONNECT with a receipt: every ack before it is handled
    async with asyncio.timeout(HANG_GUARD):
        await consumer
    await agent.stop()
    records = len(await agent.ledger.list())
    await agent.ledger.close()
    return {"wall": wall, "cpu": cpu, "messages": counts.total(), "outcomes": dict(counts),
            "records": records, "threads": threads, "startup": t0 - begun,
            "startup_cpu": receiver0}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    global DIRECT, PREFETCH
    DIRECT, PREFETCH = args.direct, args.prefetch
    if os.environ.get("BENCH_SWITCH"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))
    address = BrokerAddress("127.0.0.1", args.port, args.user, args.password)
    if args.role == "bare":
        result = bare_drain(address, args.queue, args.expect)
    else:
        import logging

        # As `idds-vis agent` logs (INFO, to stderr; here to a file the parent names).
        logging.basicConfig(level=logging.INFO, filename=args.log,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
        work = agent_drain(address, args.queue, args.expect, Path(args.state), args.dlq,
                           started=args.role == "agent",
                           database_url=args.database_url)  # fmt: skip
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)
            result = profiler.runcall(asyncio.run, work)
            profiler.dump_stats(args.profile)
        else:
            result = asyncio.run(work)
    print(json.dumps(result), flush=True)


def run_child(role: str, address: BrokerAddress, destination: str, expect: int, work: Path,
              dlq: str, profile: str | None = None) -> dict[str, Any]:  # fmt: skip
    state = (LEDGER_DIR or work) / f"state-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, __file__, "--role", role, "--port", str(address.port),
            "--user", address.user, "--password", address.password, "--queue", destination,
            "--expect", str(expect), "--state", str(state), "--dlq", dlq,
            "--log", str(work / "agent.log")]  # fmt: skip
    argv += ["--prefetch", str(PREFETCH)]
    if DIRECT:
        argv.append("--direct")
    if profile:
        argv += ["--profile", profile]
    if PG_BASE is not None and role != "bare":
        name = f"bench_{uuid.uuid4().hex[:12]}"
        subprocess.run(["psql", PG_BASE, "-qc", f"CREATE DATABASE {name}"], check=True)
        argv += ["--database-url", PG_BASE.rsplit("/", 1)[0] + f"/{name}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD + 60)
    if done.returncode != 0:
        raise SystemExit(f"{role} consumer failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


BROKER_PID: int | None = None  # the ActiveMQ JVM, once started
LEDGER_DIR: Path | None = None  # --ledger-dir
PG_BASE: str | None = None  # --postgres: the throwaway server's URL (libpq form)
DIRECT = False  # --direct: the agent reads the stream itself, no relay queue


def postgres_cpu() -> float:
    """CPU seconds so far of the PostgreSQL server's processes (0 without --postgres)."""
    from tests.pg import server_cpu

    return server_cpu() if PG_BASE is not None else 0.0


def broker_cpu() -> float:
    """CPU seconds so far of the broker: on one machine it takes its share of the cores."""
    if BROKER_PID is None:
        return 0.0
    times = psutil.Process(BROKER_PID).cpu_times()
    return float(times.user + times.system)


def one_drain(role: str, address: BrokerAddress, stream: list[tuple[dict[str, str], bytes]],
              work: Path, dlq: str, relevant_count: int,
              profile: str | None = None) -> dict[str, Any]:  # fmt: skip
    destination = f"/queue/bench.intake.{role}.{uuid.uuid4().hex[:8]}"
    load(address, destination, stream)
    before, pg_before = broker_cpu(), postgres_cpu()
    result = run_child(role, address, destination, len(stream), work, dlq, profile)
    result["broker"] = broker_cpu() - before  # the broker serves this drain alone
    # Includes the backends' start-up and the CREATE TABLEs of the fresh database.
    result["postgres"] = postgres_cpu() - pg_before
    left = browse(address, destination)
    relay = relay_of(destination)
    if role != "bare" and relay is not None:
        left += browse(address, relay)
    if left or result["messages"] != len(stream):
        raise SystemExit(f"{role}: {result['messages']} handled, {left} left on {destination}")
    if role != "bare":
        outcomes = result["outcomes"]
        wanted = {"submitted": relevant_count, "ignored": len(stream) - relevant_count}
        wanted = {outcome: n for outcome, n in wanted.items() if n}
        if outcomes != wanted or result["records"] != relevant_count:
            raise SystemExit(f"{role}: outcomes {outcomes}, {result['records']} records; "
                             f"expected {wanted} and {relevant_count} records")  # fmt: skip
    return result


def main() -> None:
    global BROKER_PID, LEDGER_DIR, PG_BASE, DIRECT, PREFETCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--relevant-every", type=int, default=100,
                        help="one message in this many is a vis_request")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2_000,
                        help="messages in the untimed warm-up pair (0: none)")  # fmt: skip
    parser.add_argument("--ledger-dir", type=Path,
                        help="where the agents' SQLite ledgers go (default: the work dir); "
                             "/dev/shm shows what the commits' fsyncs cost")  # fmt: skip
    parser.add_argument("--postgres", action="store_true",
                        help="ledger on a throwaway PostgreSQL (tests/pg.py), one database per "
                             "drain, instead of SQLite")  # fmt: skip
    parser.add_argument("--direct", action="store_true",
                        help="the agent reads the stream itself (stomp_relay_queue unset): one "
                             "ack per message, as bare")  # fmt: skip
    parser.add_argument("--prefetch", type=int, default=PREFETCH,
                        help="both consumers' window (activemq.prefetchSize)")  # fmt: skip
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE",
                        help="also profile one agent drain into FILE (cProfile)")  # fmt: skip
    # The child roles (internal).
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    for name in ("port", "expect"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    for name in ("user", "password", "queue", "state", "dlq", "log"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    stream = make_stream(args.messages, args.relevant_every)
    relevant_count = sum(1 for _, body in stream if b'"vis_request"' in body)
    dlq = f"/queue/bench.intake.dlq.{uuid.uuid4().hex[:8]}"
    broker = ActiveMQ(work / "activemq")
    print(f"ActiveMQ up in {broker.start():.1f} s; {args.messages} messages per drain, "
          f"{relevant_count} relevant; work dir {work}", flush=True)  # fmt: skip
    BROKER_PID, LEDGER_DIR = broker.pid, args.ledger_dir
    DIRECT, PREFETCH = args.direct, args.prefetch
    postgres = contextlib.ExitStack()
    try:
        if args.postgres:
            from tests.pg import throwaway_postgres

            url = postgres.enter_context(throwaway_postgres())
            PG_BASE = url.replace("postgresql+asyncpg://", "postgresql://")
            print(f"PostgreSQL up at {PG_BASE}", flush=True)
        address = broker.address
        if args.warmup:
            warm = make_stream(args.warmup, args.relevant_every, seed=5)
            warm_relevant = sum(1 for _, body in warm if b'"vis_request"' in body)
            for role in ROLES:
                one_drain(role, address, warm, work, dlq, warm_relevant)
        results: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
        # The order turns each round (bare, agent, intake; agent, intake, bare; ...), so
        # whatever a drain leaves the broker to do (its store's checkpoints and clean-ups)
        # falls on each role alike.
        rounds = ((i, ROLES[(i + k) % len(ROLES)]) for i in range(args.runs)
                  for k in range(len(ROLES)))  # fmt: skip
        for i, role in rounds:
            res = one_drain(role, address, stream, work, dlq, relevant_count)
            results[role].append(res)
            print(f"run {i + 1} {role:6}: {args.messages / res['wall']:8.0f} msg/s, "
                  f"wall {res['wall']:6.2f} s, CPU {res['cpu']:6.2f} s {res['threads']}",
                  flush=True)  # fmt: skip
        if args.profile:
            one_drain("agent", address, stream, work, dlq, relevant_count, args.profile)
        dead = browse(address, dlq)
    finally:
        broker.stop()
        postgres.close()

    med = statistics.median
    n = args.messages
    rate = {role: med(n / r["wall"] for r in rs) for role, rs in results.items()}
    cpu_k = {role: med(r["cpu"] for r in rs) / n * 1000 for role, rs in results.items()}
    broker_k = {role: med(r["broker"] for r in rs) / n * 1000 for role, rs in results.items()}
    print(f"\nmedians of {args.runs} interleaved runs, {n} messages each "
          f"(1 in {args.relevant_every} relevant), prefetch {PREFETCH}")  # fmt: skip
    print()
    pg_k = {role: med(r["postgres"] for r in rs) / n * 1000 for role, rs in results.items()}
    server = f" {'postgres':>8}" if args.postgres else ""
    print(f"{'consumer':54} {'msg/s':>8} {'wall s':>7} {'CPU s/1000 msg':>15} {'broker':>7}"
          + server + f" {'start-up s':>10}")
    how = "direct" if DIRECT else "relayed"
    labels = {"bare": "bare stomp.py, ack only (client-individual)",
              "agent": f"agent (intake + pipeline workers), {how}",
              "intake": f"intake alone (agent not started), {how}"}  # fmt: skip
    for role in ROLES:
        wall = med(r["wall"] for r in results[role])
        on_pg = f" {pg_k[role]:8.3f}" if args.postgres else ""
        startup = med(r["startup"] for r in results[role])
        print(f"{labels[role]:54} {rate[role]:8.0f} {wall:7.2f} {cpu_k[role]:15.3f} "
              f"{broker_k[role]:7.3f}{on_pg} {startup:10.3f}")  # fmt: skip
    print(f"\nCPU ms per 1000 messages by thread (medians): "
          f"{', '.join(g for g, _ in THREAD_GROUPS)}, other")  # fmt: skip
    for role in ROLES:
        groups = [g for g, _ in THREAD_GROUPS] + ["other"]
        per = [med(r["threads"].get(g, 0.0) for r in results[role]) / n * 1e6 for g in groups]
        print(f"{labels[role]:54} " + " ".join(f"{v:8.0f}" for v in per))
    print()
    for role in ("agent", "intake"):
        # Each round's own ratio too: the rounds run one after another, so a ratio within a
        # round has the machine's load of that moment on both sides.
        pairs = zip(results["bare"], results[role], strict=True)
        rounds = [bare["wall"] / other["wall"] for bare, other in pairs]
        print(f"{role} / bare rate: {rate[role] / rate['bare']:.1%} (target >= 80 %); "
              f"by round: {', '.join(f'{x:.0%}' for x in rounds)}")  # fmt: skip
    print(f"dead-lettered: {dead}; every queue browsed empty after its drain")
    if args.profile:
        print(f"\nprofile of one agent drain (event-loop thread), by own time: {args.profile}")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
