"""A stomp.py connection that lives in a receiver process of its own, driven from here.

Why a process: nearly every message on a shared stream is someone else's, and is parsed and
acked where it arrives (``FastIgnore``). In the agent's process, stomp.py's receiver thread
shares one GIL with the event loop and the database threads; each socket call it makes hands
the GIL over and waits up to a switch interval to get it back whenever the loop is busy, so
the stream slowed to under half the rate of a bare consumer while the agent committed the few
messages that matter (tests/bench/bench_intake.py). In a process of its own the receiver
thread has a GIL to itself, and only the messages that are not ignored cross over.

``RemoteConnection`` duck-types the part of ``stomp.Connection12`` that ``StompSource`` uses
(``set_listener``, ``connect``, ``subscribe``, ``ack``, ``send``, ``disconnect``) and calls
the listener's methods from a reader thread of its own, as stomp.py calls them from its
receiver thread. Commands and events are pickled tuples over a private socket pair
(``multiprocessing.connection``); the child is ``python -m idds_vis.sources.stomp_receiver``.
The child's death is the connection's end (the broker returns its unacked messages), and the
child ends when this side goes away (it reads end-of-file).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from idds_vis.domain.messages import ParseOptions

log = logging.getLogger(__name__)

RECEIVER_MODULE = "idds_vis.sources.stomp_receiver"
# How long closing waits for the receiver to send DISCONNECT's receipt and exit by itself.
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class FastIgnore:
    """Messages ``parse_message`` calls ``Ignore`` are acked in the receiver process and never
    cross over; ``on_ignored(n)`` is called here (on the reader thread) once n were acked."""

    options: ParseOptions
    on_ignored: Callable[[int], None] = field(compare=False)


@dataclass(frozen=True)
class ConnectionSpec:
    """What the receiver needs to open the connection (``stomp.Connection12``'s arguments)."""

    hosts: list[tuple[str, int]]
    heartbeats: tuple[int, int]
    timeout: float
    vhost: str | None
    ignore: ParseOptions | None  # None: every message crosses over


class Frame(NamedTuple):
    """What a stomp.py listener reads of a frame."""

    headers: dict[str, str]
    body: bytes = b""


class RemoteConnection:
    def __init__(self, spec: ConnectionSpec, on_ignored: Callable[[int], None] | None) -> None:
        self.spec = spec
        self._on_ignored = on_ignored
        self._listener: Any = None
        self._chan: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sending = threading.Lock()
        self._ended = threading.Event()

    def set_listener(self, _name: str, listener: Any) -> None:
        self._listener = listener

    # -- stomp.Connection12's calls (blocking: StompSource runs them in worker threads) -----
    def connect(self, username: str | None, passcode: str | None) -> None:
        """Start the receiver and connect; CONNECTED (or the failure) comes to the listener."""
        self._start()
        self._send(("connect", username, passcode))

    def subscribe(
        self,
        destination: str,
        id: str,
        ack: str,
        headers: dict[str, str],
        relay_to: str | None = None,
    ) -> None:
        """``relay_to``: a relayed subscription (``stomp_relay``), copying to that queue."""
        self._send(("subscribe", destination, id, ack, dict(headers), relay_to))

    def ack(self, id: str) -> None:
        self._send(("ack", id))

    def send(self, destination: str, body: bytes, headers: dict[str, str]) -> None:
        self._send(("send", destination, bytes(body), dict(headers)))

    def disconnect(self, receipt: str | None = None) -> None:
        self._send(("disconnect", receipt))

    def close(self) -> None:
        """End the receiver: at once, or once a DISCONNECT sent before has its receipt."""
        with contextlib.suppress(OSError, ValueError):
            self._send(("close",))
        if self._proc is not None:
            _reap(self._proc)
        chan, self._chan = self._chan, None
        if chan is not None:
            chan.close()

    # -- the process and its channel ---------------------------------------------------------
    def _start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("a RemoteConnection connects once; make a new one to reconnect")
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", RECEIVER_MODULE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._chan = Connection(ours.detach())
        self._send(self.spec)
        threading.Thread(target=self._read, name="stomp-remote-reader", daemon=True).start()

    def _send(self, item: object) -> None:
        chan = self._chan
        if chan is None or self._ended.is_set():
            raise ConnectionError("the STOMP receiver process has ended")
        with self._sending:
            chan.send(item)

    def _read(self) -> None:
        """stomp.py's receiver thread, as far as the listener can tell."""
        chan = self._chan
        assert chan is not None
        listener = self._listener
        try:
            while True:
                event = chan.recv()
                kind = event[0]
                if kind == "message":
                    listener.on_message(Frame(event[1], event[2]))
                elif kind == "ignored":
                    if self._on_ignored is not None:
                        self._on_ignored(event[1])
                elif kind == "receipt":
                    listener.on_receipt(Frame({"receipt-id": event[1]}))
                elif kind == "connected":
                    listener.on_connected(Frame(event[1]))
                elif kind == "error":
                    listener.on_error(Frame(event[1], event[2]))
                elif kind == "failed":
                    listener.on_failure(event[1], event[2])
                elif kind == "heartbeat_timeout":
                    listener.on_heartbeat_timeout()
                elif kind == "disconnected":
                    listener.on_disconnected()
        except (EOFError, OSError):
            pass  # the receiver is ending (it closed its end), or close() closed ours
        except Exception:
            log.exception("STOMP receiver events: reader failed; dropping the connection")
            # Out of step with the receiver: it goes too, so nothing is half-connected.
            if self._proc is not None:
                with contextlib.suppress(OSError):
                    self._proc.kill()
        finally:
            self._ended.set()
            listener.on_disconnected()  # idempotent on the listener's side
            if self._proc is not None:
                _reap(self._proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=CLOSE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
