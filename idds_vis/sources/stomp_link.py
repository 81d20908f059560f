"""One STOMP connection, bridged from stomp.py's threads to the event loop.

The connection itself runs in a receiver process (``stomp_remote``), whose reader thread calls
listener methods as stomp.py's receiver thread would. ``ThreadListener`` does nothing on that
thread but hand each event to the loop with ``call_soon_threadsafe``; every piece of state
lives in ``StompLink`` and is touched only on the loop, so no locks are needed and a slow
intake never delays heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# (link, headers, body) -> None, called on the loop for every MESSAGE frame.
MessageSink = Callable[["StompLink", dict[str, str], bytes], None]


class ConnectionLost(ConnectionError):
    """The connection closed (or the broker sent ERROR) before the awaited answer came."""


class StompLink:
    """A stomp.py connection plus what its threads reported, as seen from the loop."""

    def __init__(self, conn: Any, generation: int) -> None:
        self.conn = conn  # stomp.Connection12 (untyped library)
        self.generation = generation
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.error: str | None = None
        self._receipts: dict[str, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"<StompLink #{self.generation} {'closed' if self.closed.is_set() else 'open'}>"

    @property
    def usable(self) -> bool:
        return self.connected.is_set() and not self.closed.is_set()

    async def wait_connected(self) -> None:
        """Until CONNECTED arrives; ``ConnectionLost`` if the connection ends first."""
        if not self.connected.is_set():
            closed = asyncio.ensure_future(self.closed.wait())
            connected = asyncio.ensure_future(self.connected.wait())
            try:
                await asyncio.wait({closed, connected}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                connected.cancel()
        if not self.usable:
            raise ConnectionLost(self.error or "the broker closed the connection")

    def expect_receipt(self) -> tuple[str, asyncio.Future[None]]:
        """A fresh receipt id and the future its RECEIPT frame resolves."""
        if self.closed.is_set():
            raise ConnectionLost(self.error or "the connection is closed")
        receipt = f"idds-vis-{uuid.uuid4().hex}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._receipts[receipt] = future
        return receipt, future

    def forget_receipt(self, receipt: str) -> None:
        self._receipts.pop(receipt, None)

    # -- called on the loop, scheduled by _ThreadListener ----------------------------------
    def on_connected(self) -> None:
        self.connected.set()

    def on_receipt(self, receipt: str) -> None:
        future = self._receipts.pop(receipt, None)
        if future is not None and not future.done():
            future.set_result(None)

    def on_error(self, headers: dict[str, str], body: bytes) -> None:
        message = headers.get("message") or body.decode("utf-8", "replace").strip() or "ERROR"
        self.error = f"broker error: {message}"
        log.warning("STOMP connection #%d: %s", self.generation, self.error)
        # An ERROR answering a frame that asked for a receipt fails that wait at once.
        receipt = headers.get("receipt-id")
        future = self._receipts.pop(receipt, None) if receipt else None
        if future is not None and not future.done():
            future.set_exception(ConnectionLost(self.error))

    def on_heartbeat_timeout(self) -> None:
        self.error = self.error or "no heartbeat from the broker"
        self.on_closed()

    def on_connect_failed(self, reason: str) -> None:
        self.error = self.error or f"connect failed ({reason})"
        self.on_closed()

    def on_closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._receipts.values():
            if not future.done():
                future.set_exception(ConnectionLost(self.error or "the connection closed"))
        self._receipts.clear()


class ThreadListener:
    """The listener stomp.py calls on its own threads; it only forwards to the loop.

    Its methods are those of a stomp.py listener, called by name by ``RemoteConnection``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, link: StompLink, sink: MessageSink) -> None:
        self._loop = loop
        self._link = link
        self._sink = sink

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the loop is closed, the process is shutting down, nobody listens.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def on_connected(self, frame: Any) -> None:
        self._call(self._link.on_connected)

    def on_message(self, frame: Any) -> None:
        # The receiver process sent this frame's own headers dict and bytes body.
        self._call(self._sink, self._link, frame.headers, frame.body)

    def on_failure(self, command: str, reason: str) -> None:
        """A command failed in the receiver process; a failed connect ends the connection."""
        if command == "connect":
            self._call(self._link.on_connect_failed, reason)
        else:
            log.info("STOMP connection #%d: %s failed: %s", self._link.generation, command,
                     reason)  # fmt: skip

    def on_receipt(self, frame: Any) -> None:
        self._call(self._link.on_receipt, str(frame.headers.get("receipt-id", "")))

    def on_error(self, frame: Any) -> None:
        self._call(self._link.on_error, frame.headers, frame.body)

    def on_disconnected(self) -> None:
        self._call(self._link.on_closed)

    def on_heartbeat_timeout(self) -> None:
        # stomp.py closes the socket itself; say so now rather than wait for the io thread.
        self._call(self._link.on_heartbeat_timeout)
