"""The STOMP receiver process: one stomp.py connection, driven by ``RemoteConnection``.

``python -m idds_vis.sources.stomp_receiver FD``: FD is this end of the socket pair. The first
item read is the ``ConnectionSpec``; then commands (``connect``, ``subscribe``, ``ack``,
``send``, ``disconnect``, ``close``) are run in order, and stomp.py's events go back. A message
the spec's parse options call ``Ignore`` is acked right here, on stomp.py's receiver thread,
and only counted back (every ``REPORT_EVERY`` seconds); every other message crosses over, or,
on a relayed subscription (``stomp_relay``), is copied to the relay queue and acked
cumulatively once the broker has stored the copy.

Ends when told to close, when a connect fails, or when the other side goes away (end of
file): the agent was stopped or killed, and the broker takes the unacked messages back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import stomp  # type: ignore[import-untyped]
from stomp.utils import Frame, convert_frame, pack  # type: ignore[import-untyped]

from idds_vis.domain.messages import Ignore, ParseOptions, parse_message
from idds_vis.sources.stomp_relay import Watermark, relay_headers
from idds_vis.sources.stomp_remote import CLOSE_TIMEOUT, ConnectionSpec

log = logging.getLogger("idds_vis.sources.stomp_receiver")

REPORT_EVERY = 0.05  # seconds between counts of what was acked here
# Acks of ignored messages are written together: one socket write for up to ACK_BATCH of them,
# and at least every ACK_EVERY seconds. A write per ack (what stomp.py's ``ack`` does) was 40 %
# of this process's samples, and every write wakes the broker once more. ACK_BATCH stays well
# under the subscription's prefetch (1000), so the broker never waits for a held ack. A relayed
# subscription sends one cumulative ACK per ACK_BATCH settled messages, or after ACK_EVERY.
ACK_BATCH = 32
ACK_EVERY = 0.005


class _Channel:
    """The socket pair, written from several threads."""

    def __init__(self, chan: Connection) -> None:
        self.chan = chan
        self._lock = threading.Lock()

    def send(self, *event: object) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # the agent is gone
            self.chan.send(event)


class _AckBatch:
    """ACK frames for ignored messages, encoded by stomp.py and sent in one write.

    A crash before a flush only means the broker delivers those messages again, and they are
    ignored again. ``flush`` is called before anything that must follow the acks (DISCONNECT).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._frames: list[bytes] = []
        self._lock = threading.Lock()
        self.pending = threading.Event()  # set while frames wait: the reporter then flushes

    def add(self, ack_id: str) -> None:
        frame = pack(convert_frame(Frame("ACK", {"id": ack_id})))
        with self._lock:
            self._frames.append(frame)
            full = len(self._frames) >= ACK_BATCH
            if len(self._frames) == 1:
                self.pending.set()
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            frames, self._frames = self._frames, []
            self.pending.clear()
            if frames:
                # Under the lock: batches leave in the order they were taken.
                self.conn.transport.send(b"".join(frames))


class _Listener:
    """stomp.py's listener: ignorable messages acked here, everything else passed over."""

    def __init__(self, conn: Any, out: _Channel, options: ParseOptions | None) -> None:
        self.conn = conn
        self.acks = _AckBatch(conn)
        self.out = out
        self.options = options
        self.ignored = 0
        self._counting = threading.Lock()
        self.disconnected = threading.Event()
        # Relayed subscriptions: subscription id -> (relay queue, its watermark); and the
        # copies on their way, by receipt id -> (watermark, message number).
        self.relays: dict[str, tuple[str, Watermark]] = {}
        self._copies: dict[str, tuple[Watermark, int]] = {}
        self._copy_count = 0
        self._acking = threading.Lock()

    def on_connected(self, frame: Any) -> None:
        self.out.send("connected", dict(frame.headers))

    def on_message(self, frame: Any) -> None:
        body = frame.body if isinstance(frame.body, bytes) else bytes(frame.body or b"")
        headers = frame.headers  # stomp.py's own dict, made for this frame
        relay = self.relays.get(headers.get("subscription", "")) if self.relays else None
        if relay is not None:
            self._relay(relay, headers, body)
        elif self._acked_here(headers, body):
            return
        else:
            self.out.send("message", dict(headers), body)

    def _ignorable(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            options = self.options
            return options is not None and isinstance(parse_message(headers, body, options), Ignore)
        except Exception:  # parse_message does not raise; if it did, the intake decides
            return False

    def _acked_here(self, headers: dict[str, str], body: bytes) -> bool:
        # Anything unexpected (an ack that fails) sends the message over the normal way.
        if not self._ignorable(headers, body):
            return False
        try:
            self.acks.add(headers.get("ack") or headers.get("message-id", ""))
        except Exception:
            return False
        with self._counting:
            self.ignored += 1
        return True

    def _relay(self, relay: tuple[str, Watermark], headers: dict[str, str], body: bytes) -> None:
        queue, mark = relay
        ack_id = headers.get("ack") or headers.get("message-id", "")
        if self._ignorable(headers, body):
            mark.arrive(ack_id, settled=True, ignored=True)
            self._ack_due(mark, ACK_BATCH)
            return
        number = mark.arrive(ack_id, settled=False)
        self._copy_count += 1
        receipt = f"relay-{self._copy_count}"
        self._copies[receipt] = (mark, number)  # before the SEND: its RECEIPT may come at once
        try:
            self.conn.send(queue, body, headers=relay_headers(headers, receipt))
        except Exception as exc:  # the socket is gone: the broker delivers it again
            self._copies.pop(receipt, None)
            log.info("could not copy a message to %s: %s", queue, exc)

    def _ack_due(self, mark: Watermark, at_least: int) -> None:
        """Write the cumulative ACK once ``at_least`` messages are settled; fewer wait for the
        reporter (``flush``)."""
        # Taken and written under one lock: a cumulative ACK older than one already written
        # names a message the broker no longer holds, and ActiveMQ answers that with ERROR.
        with self._acking:
            taken = mark.take(at_least)
            if taken is None:
                if mark.due:
                    self.acks.pending.set()
                return
            ack_id, ignored = taken
            self.acks.add(ack_id)
            self.acks.flush()
        if ignored:
            with self._counting:
                self.ignored += ignored

    def flush(self) -> None:
        """Every ack that is due, written now."""
        for _queue, mark in list(self.relays.values()):
            self._ack_due(mark, 1)
        self.acks.flush()

    def take_ignored(self) -> int:
        with self._counting:
            count, self.ignored = self.ignored, 0
        return count

    def on_receipt(self, frame: Any) -> None:
        receipt = str(frame.headers.get("receipt-id", ""))
        copy = self._copies.pop(receipt, None)
        if copy is None:
            self.out.send("receipt", receipt)
            return
        mark, number = copy  # the copy is stored: the original may be acked
        mark.settle(number)
        self._ack_due(mark, ACK_BATCH)

    def on_error(self, frame: Any) -> None:
        body = frame.body if isinstance(frame.body, bytes) else bytes(frame.body or b"")
        self.out.send("error", dict(frame.headers), body)
        if str(frame.headers.get("receipt-id", "")) in self._copies:
            # A copy the broker refused (no right to write the relay queue, say) would hold
            # every later ack: drop the connection, so that it shows and the messages return.
            log.error("relay queue refused a copy: %s", frame.headers.get("message", body))
            with contextlib.suppress(Exception):
                self.conn.transport.disconnect_socket()

    def on_disconnected(self) -> None:
        self.report()
        self.disconnected.set()
        self.out.send("disconnected")

    def on_heartbeat_timeout(self) -> None:
        self.out.send("heartbeat_timeout")

    def report(self) -> None:
        """Count back what was acked here; the acks are written first, so a message counted
        as ignored has had its ack sent."""
        with contextlib.suppress(Exception):  # not connected (any more): nothing to ack on
            self.flush()
        count = self.take_ignored()
        if count:
            self.out.send("ignored", count)


def _reporter(listener: _Listener, stop: threading.Event) -> None:
    last_report = time.monotonic()
    while not stop.is_set():
        # Idle, this wakes every REPORT_EVERY; with acks waiting, ACK_EVERY after the first.
        if listener.acks.pending.wait(REPORT_EVERY) and not stop.wait(ACK_EVERY):
            with contextlib.suppress(Exception):  # not connected (any more)
                listener.flush()
        now = time.monotonic()
        if now - last_report >= REPORT_EVERY:
            last_report = now
            listener.report()


def run(chan: Connection) -> None:
    spec = chan.recv()
    if not isinstance(spec, ConnectionSpec):
        raise SystemExit(f"stomp_receiver: expected a ConnectionSpec, got {type(spec).__name__}")
    conn = stomp.Connection12(
        host_and_ports=spec.hosts,
        prefer_localhost=False,  # keep the configured order
        try_loopback_connect=False,
        reconnect_attempts_max=1,  # the agent's backoff decides when to try again
        timeout=spec.timeout,
        heartbeats=spec.heartbeats,
        heart_beat_receive_scale=2.0,
        vhost=spec.vhost,
        auto_decode=False,  # raw bytes: stomp.py would replace bad UTF-8 silently
    )
    out = _Channel(chan)
    listener = _Listener(conn, out, spec.ignore)
    conn.set_listener("idds-vis", listener)
    stop = threading.Event()
    threading.Thread(target=_reporter, args=(listener, stop), daemon=True).start()
    disconnecting = False
    try:
        while True:
            try:
                command = chan.recv()
            except (EOFError, OSError):
                return  # the agent is gone
            op, args = command[0], command[1:]
            if op == "close":
                if disconnecting:  # let DISCONNECT's receipt arrive (it confirms every ack)
                    listener.disconnected.wait(CLOSE_TIMEOUT)
                return
            try:
                if op == "connect":
                    conn.connect(args[0], args[1], wait=False)  # CONNECTED comes as an event
                elif op == "subscribe":
                    destination, sub_id, ack, headers, relay_to = args
                    if relay_to is not None:  # registered first: messages follow the SUBSCRIBE
                        listener.relays[sub_id] = (relay_to, Watermark())
                    conn.subscribe(destination, sub_id, ack=ack, headers=headers)
                elif op == "ack":
                    conn.ack(args[0])
                elif op == "send":
                    destination, body, headers = args
                    conn.send(destination, body, headers=headers)
                elif op == "disconnect":
                    disconnecting = True
                    listener.flush()  # DISCONNECT's receipt then confirms them too
                    conn.disconnect(receipt=args[0])
                else:
                    log.error("unknown command %s", op)
            except Exception as exc:
                # stomp.py's ConnectFailedException has no message: name the type too.
                what = f"{type(exc).__name__}: {exc}".rstrip(": ")
                log.info("%s failed: %s", op, what)
                out.send("failed", op, what)
                if op == "connect":
                    return
    finally:
        stop.set()
        listener.report()
        with contextlib.suppress(Exception):
            transport = conn.transport
            if transport.socket is not None or transport.running:
                transport.disconnect_socket()


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run(Connection(int(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
