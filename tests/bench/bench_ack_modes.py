"""What acking costs the broker: one stomp.py consumer that only acks, in three ways of acking.

Run by hand (not by CI):  python tests/bench/bench_ack_modes.py [--messages 20000] [--runs 3]
                                                                [--prefetch 100,400]

On the 2-core machine the broker takes more CPU per message than the agent's receiver does
(tests/bench/bench_intake.py): this asks how much of it is the acks. A private ActiveMQ
(tests/activemq.py) is started; before each drain bench_intake's stream (1 in 100 relevant, though
here every message is only acked) is loaded persistently onto a fresh queue and drained by a
consumer in this process that acks

- individual: ``client-individual``, one ACK frame written per message (bench_intake's bare);
- batched: ``client-individual``, the ACK frames of up to 32 messages (or 5 ms) written at once,
  as the agent's receiver process does on a direct subscription (``stomp_receiver._AckBatch``);
- cumulative: ``client``, one ACK per 32 messages (and one for the last), each acking every
  message before it on the subscription: the broker handles one frame and one range (the
  agent's relayed subscriptions, ``idds_vis.sources.stomp_relay``).

for each ``--prefetch``. Modes run interleaved; it prints medians of the rate, this process's CPU
per message and the broker's. Asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import stomp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

import bench_intake  # noqa: E402

from idds_vis.sources.stomp_receiver import ACK_BATCH, ACK_EVERY, _AckBatch  # noqa: E402
from tests.activemq import ActiveMQ, BrokerAddress  # noqa: E402

MODES = ("individual", "batched", "cumulative")
HANG_GUARD = 600.0


def drain(address: BrokerAddress, destination: str, expect: int, mode: str,
          prefetch: int) -> tuple[float, float]:  # fmt: skip
    """Wall seconds from the SUBSCRIBE's receipt to the last ack, and this process's CPU."""
    done, stop = threading.Event(), threading.Event()
    seen = 0
    conn = stomp.Connection12([(address.host, address.port)],
                              heartbeats=bench_intake.HEARTBEATS, auto_decode=False)  # fmt: skip
    acks = _AckBatch(conn)

    class Acker(bench_intake.Receipts):
        def on_message(self, frame: Any) -> None:
            nonlocal seen
            seen += 1
            ack_id = frame.headers["ack"]
            if mode == "individual":
                conn.ack(ack_id)
            elif mode == "batched":
                acks.add(ack_id)
                if seen == expect:
                    acks.flush()
            elif seen % ACK_BATCH == 0 or seen == expect:
                conn.ack(ack_id)
            if seen == expect:
                done.set()

    acker = Acker()
    subscribed, disconnected = acker.subscribed, acker.disconnected

    def flusher() -> None:  # the receiver process's reporter thread, for "batched"
        while not stop.is_set():
            if acks.pending.wait(0.05) and not stop.wait(ACK_EVERY):
                acks.flush()

    threading.Thread(target=flusher, daemon=True).start()
    conn.set_listener("acker", acker)
    conn.connect(address.user, address.password, wait=True)
    ack = "client" if mode == "cumulative" else "client-individual"
    headers = {"activemq.prefetchSize": str(prefetch), "receipt": "acker-0"}
    conn.subscribe(destination, "acker-0", ack=ack, headers=headers)
    if not subscribed.wait(HANG_GUARD):
        raise SystemExit("no receipt for the SUBSCRIBE")
    cpu0, t0 = time.process_time(), time.perf_counter()
    if not done.wait(HANG_GUARD):
        raise SystemExit(f"{mode}: saw {seen} of {expect} messages")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    conn.disconnect()  # with a receipt, which comes once the broker has handled every ack
    if not disconnected.wait(HANG_GUARD):
        raise SystemExit("no receipt for the DISCONNECT")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", default="100,400", help="comma-separated prefetch sizes")
    args = parser.parse_args()
    prefetches = [int(p) for p in args.prefetch.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-ack-modes-"))
    stream = bench_intake.make_stream(args.messages, 100)
    broker = ActiveMQ(work / "activemq")
    print(f"ActiveMQ up in {broker.start():.1f} s; {args.messages} messages per drain", flush=True)
    bench_intake.BROKER_PID = broker.pid
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for run, prefetch, mode in itertools.product(range(args.runs), prefetches, MODES):
            destination = f"/queue/bench.ack.{mode}.{uuid.uuid4().hex[:8]}"
            bench_intake.load(broker.address, destination, stream)
            before = bench_intake.broker_cpu()
            wall, cpu = drain(broker.address, destination, args.messages, mode, prefetch)
            on_broker = bench_intake.broker_cpu() - before
            left = bench_intake.browse(broker.address, destination)
            if left:
                raise SystemExit(f"{mode}: {left} messages left on {destination}")
            n = args.messages
            figures = (n / wall, cpu / n * 1e6, on_broker / n * 1e6)
            results.setdefault((mode, prefetch), []).append(figures)
            print(f"run {run + 1} {mode:10} prefetch {prefetch:4}: {figures[0]:6.0f} msg/s, "
                  f"consumer {figures[1]:4.0f} µs, broker {figures[2]:4.0f} µs per message",
                  flush=True)  # fmt: skip
    finally:
        broker.stop()
    print(f"\nmedians of {args.runs} interleaved runs, {args.messages} messages each")
    print(f"{'acks':12} {'prefetch':>8} {'msg/s':>7} {'consumer µs/msg':>16} {'broker µs/msg':>14}")
    for (mode, prefetch), rows in results.items():
        rate, consumer, on_broker = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"{mode:12} {prefetch:8} {rate:7.0f} {consumer:16.0f} {on_broker:14.0f}")


if __name__ == "__main__":
    main()
