"""A STOMP 1.2 message source (ActiveMQ, as PanDA and iDDS use) for the intake.

Delivery guarantees, and why:

- Subscriptions use ``ack: client-individual``: a message leaves the broker only when the intake
  acks it, after its request is committed. Unacked messages return to the broker when the
  connection ends, so a crash loses nothing (queues; a plain topic keeps nothing for an absent
  subscriber, hence ActiveMQ virtual-topic queues ``/queue/Consumer.<name>.VirtualTopic.<X>``).
- With ``relay_queue`` set, the configured subscriptions are relayed instead (``stomp_relay``:
  ``ack: client``, acked cumulatively by the receiver process once each message is ignored or
  its copy is stored on the relay queue), and the relay queue is consumed as above, with every
  guarantee below.
- ``nack`` never sends a STOMP NACK: ActiveMQ 5 takes NACK as a poison ack and moves the message
  to ``ActiveMQ.DLQ`` at once, with no redelivery (seen with 5.17). Instead the message stays
  unacked and is handed to the intake again after a growing, jittered delay.
- ``dead_letter`` publishes the original body to the dead-letter queue (persistent, with the
  reason in ``idds-vis-reason``), waits for the broker's RECEIPT, and only then acks the
  original: a crash in between can duplicate a dead letter, never lose one.
- Ack ids belong to one connection. Settling a delivery from a connection that has since closed
  is a no-op (the broker redelivers it); sending its id on a new connection would be an error.
- After a disconnect, the source reconnects with exponential backoff and jitter (tenacity) and
  subscribes again; each SUBSCRIBE waits for its receipt so a refused subscription is a failed
  connection attempt, retried, not a silent gap.

Each connection lives in a receiver process of its own (``stomp_remote``, which says why);
messages the ``fast_ignore`` options call ``Ignore`` are acked there and only counted here.
Every call that can block (connect, send, ack, disconnect) runs in a worker thread; frames
come back on the connection's reader thread through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from idds_vis.ports.source import Delivery
from idds_vis.sources.stomp_link import ConnectionLost, StompLink, ThreadListener
from idds_vis.sources.stomp_relay import ORIGINAL_DESTINATION_HEADER, ORIGINAL_MESSAGE_ID_HEADER
from idds_vis.sources.stomp_remote import ConnectionSpec, FastIgnore, RemoteConnection

log = logging.getLogger(__name__)

DEFAULT_DLQ = "/queue/idds-vis.DLQ"
REASON_HEADER = "idds-vis-reason"
__all__ = [
    "DEFAULT_DLQ",
    "ORIGINAL_DESTINATION_HEADER",
    "ORIGINAL_MESSAGE_ID_HEADER",
    "REASON_HEADER",
    "StompSettings",
    "StompSource",
]
_MAX_REASON_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class StompSettings:
    """Where to connect and what to read. Durations in seconds, heartbeats in milliseconds."""

    hosts: Sequence[tuple[str, int]]
    subscriptions: Sequence[str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dead_letter_destination: str = DEFAULT_DLQ
    vhost: str | None = None
    # (we send every, we want to hear at least every); stomp.py allows 2x slack on receive.
    heartbeats: tuple[int, int] = (10_000, 10_000)
    # Where relayed subscriptions copy what is not ignored (None: no relay; stomp_relay).
    relay_queue: str | None = None
    # How many unacked messages the broker hands us at once per subscription (ActiveMQ's own
    # header; 1000 is ActiveMQ's default for queues). A relayed stream needs a wide window: a
    # copy's receipt waits for the broker's journal to sync, and the messages behind it wait
    # unacked meanwhile. In tests/bench/bench_intake.py the relayed agent ran at 84 % of the
    # bare consumer's rate with a window of 200, at 115 % with 1000; one ack per message runs
    # the same at both.
    prefetch: int = 1000
    # The relay queue's window: small, so that agents sharing it share its messages (each is a
    # lookup and a commit), not one agent holding a backlog behind its few intake slots.
    relay_prefetch: int = 100
    connect_timeout: float = 10.0
    receipt_timeout: float = 30.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    retry_initial: float = 1.0  # first local redelivery after nack
    retry_max: float = 300.0
    subscription_id_prefix: str = "idds-vis"

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("at least one broker host:port is needed")
        if not self.subscriptions:
            raise ValueError("at least one destination to subscribe to is needed")
        for destination in [*self.subscriptions, self.dead_letter_destination]:
            if not destination.startswith(("/queue/", "/topic/")):
                raise ValueError(f"destination {destination!r} must start with /queue/ or /topic/")
        if self.relay_queue is not None:
            if not self.relay_queue.startswith("/queue/"):
                raise ValueError(f"relay queue {self.relay_queue!r} must start with /queue/")
            if self.relay_queue in (*self.subscriptions, self.dead_letter_destination):
                raise ValueError(
                    f"relay queue {self.relay_queue!r} must not be a subscription or the "
                    "dead-letter destination"
                )
        if self.prefetch < 1 or self.relay_prefetch < 1:
            raise ValueError("prefetch must be at least 1")


@dataclass(frozen=True)
class _Token:
    """What settling a delivery needs: its connection and the id to ack it with."""

    link: StompLink
    ack_id: str


class _Stop:
    """Ends ``messages()``."""


_STOP = _Stop()


class StompSource:
    """The ``MessageSource`` port over STOMP; see the module docstring for the guarantees."""

    def __init__(self, settings: StompSettings, fast_ignore: FastIgnore | None = None) -> None:
        self.settings = settings
        # Which messages the receiver process acks by itself, never passing them over.
        self.fast_ignore = fast_ignore
        self._queue: asyncio.Queue[Delivery | _Stop] = asyncio.Queue()
        self._link: StompLink | None = None  # the newest connection, usable or being set up
        self._generation = 0
        self._connections = 0
        self._ready = asyncio.Event()  # connected and subscribed
        self._down = asyncio.Event()  # the opposite, so either can be awaited
        self._down.set()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopping = False
        # The relay queue's subscription id: its deliveries are copies (see _on_message).
        self._relay_id = (
            f"{settings.subscription_id_prefix}-relay" if settings.relay_queue else None
        )

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._supervise(), name="stomp-source")

    async def wait_connected(self) -> None:
        """Until connected and subscribed (used by readiness checks and tests)."""
        await self._ready.wait()

    async def wait_disconnected(self) -> None:
        """Until the connection is lost (or was never made)."""
        await self._down.wait()

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self._ready.set()
            self._down.clear()
        else:
            self._ready.clear()
            self._down.set()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def connections(self) -> int:
        """How many times a connection was established and subscribed (1 + reconnects)."""
        return self._connections

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._set_ready(False)
        link, self._link = self._link, None
        if link is not None:
            await self._close(link, graceful=True)
        # Deliveries not yet taken are unacked: the broker has them back. Drop the copies so
        # the intake ends now instead of working on through messages it can no longer settle.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_STOP)

    # -- receiving ------------------------------------------------------------------------
    async def messages(self) -> AsyncIterator[Delivery]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)  # any other reader stops too
                return
            yield item

    def _on_message(self, link: StompLink, headers: dict[str, str], body: bytes) -> None:
        message_id = headers.get("message-id", "")
        destination = headers.get("destination", "")
        subscription = headers.get("subscription", "")
        ack_id = headers.get("ack") or message_id
        if subscription == self._relay_id:  # a relayed copy: name the message it copies
            message_id = headers.get(ORIGINAL_MESSAGE_ID_HEADER) or message_id
            destination = headers.get(ORIGINAL_DESTINATION_HEADER) or destination
        delivery = Delivery(
            headers=headers,
            body=body,
            message_id=message_id,
            subscription=subscription,
            destination=destination,
            token=_Token(link, ack_id),
        )
        # Kept even if the link has closed meanwhile: processing is idempotent, and on a plain
        # topic this copy is the only one left.
        self._queue.put_nowait(delivery)

    # -- settling -------------------------------------------------------------------------
    async def ack(self, delivery: Delivery) -> None:
        token = self._live(delivery, "ack")
        if token is None:
            return
        try:
            await asyncio.to_thread(token.link.conn.ack, token.ack_id)
        except OSError as exc:  # the receiver process has ended
            log.info(
                "could not ack %s (%s); the broker will deliver it again", delivery.message_id, exc
            )

    async def nack(self, delivery: Delivery) -> None:
        if self._live(delivery, "retry") is None or self._stopping:
            return
        delay = min(
            self.settings.retry_max,
            self.settings.retry_initial * 2 ** min(delivery.attempt - 1, 30),
        )
        delay *= 0.5 + random.random() / 2  # jitter: retries of a burst do not arrive together
        again = replace(delivery, attempt=delivery.attempt + 1)
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def redeliver() -> None:
            if timer is not None:
                self._timers.discard(timer)
            if not self._stopping:
                self._queue.put_nowait(again)

        timer = loop.call_later(delay, redeliver)
        self._timers.add(timer)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        token = self._live(delivery, "dead-letter")
        if token is None:
            return
        link = token.link
        headers = {
            "persistent": "true",
            REASON_HEADER: _one_line(reason),
            ORIGINAL_DESTINATION_HEADER: delivery.destination,
            ORIGINAL_MESSAGE_ID_HEADER: delivery.message_id,
        }
        if "content-type" in delivery.headers:
            headers["content-type"] = delivery.headers["content-type"]
        receipt, confirmed = link.expect_receipt()
        headers["receipt"] = receipt
        try:
            await asyncio.to_thread(
                link.conn.send,
                self.settings.dead_letter_destination,
                delivery.body,
                headers=headers,
            )
            async with asyncio.timeout(self.settings.receipt_timeout):
                await confirmed
        except OSError as exc:  # the receiver process has ended
            raise ConnectionLost(f"dead letter not stored: {exc}") from exc
        finally:
            link.forget_receipt(receipt)
        await self.ack(delivery)

    def _live(self, delivery: Delivery, what: str) -> _Token | None:
        token = delivery.token
        if not isinstance(token, _Token):
            raise TypeError(f"{delivery!r} was not delivered by this source")
        if token.link is not self._link or not token.link.usable:
            log.debug(
                "not settling (%s) %s: its connection has closed; the broker redelivers",
                what,
                delivery.message_id,
            )
            return None
        return token

    # -- connecting -----------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Connect, wait for the connection to end, reconnect; until cancelled by stop()."""
        while True:
            try:
                link = await self._connect_with_backoff()
                self._connections += 1
                self._set_ready(True)
                log.info(
                    "STOMP connection #%d up, subscribed to %s",
                    link.generation,
                    ", ".join(self.settings.subscriptions),
                )
                await link.closed.wait()
                self._set_ready(False)
                log.warning(
                    "STOMP connection #%d lost (%s); reconnecting",
                    link.generation,
                    link.error or "closed by the broker or the network",
                )
                await self._close(link, graceful=False)
            except Exception:
                # A bug here must not leave the intake waiting forever on a dead source.
                log.exception("STOMP source failed; starting over")
                self._set_ready(False)
                await asyncio.sleep(self.settings.reconnect_max)

    async def _connect_with_backoff(self) -> StompLink:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            # initial * 2**n, capped, plus up to `initial` of jitter so agents do not stampede.
            wait=wait_exponential(
                multiplier=self.settings.reconnect_initial, max=self.settings.reconnect_max
            )
            + wait_random(0, self.settings.reconnect_initial),
            before_sleep=_log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._connect_once()
        raise AssertionError("tenacity retries forever")  # pragma: no cover

    async def _connect_once(self) -> StompLink:
        s = self.settings
        self._generation += 1
        fast = self.fast_ignore
        spec = ConnectionSpec(
            hosts=list(s.hosts),
            heartbeats=s.heartbeats,
            timeout=s.connect_timeout,
            vhost=s.vhost,
            ignore=fast.options if fast is not None else None,
        )
        # A receiver process per connection (stomp_remote: why); its backoff is ours.
        conn = RemoteConnection(spec, fast.on_ignored if fast is not None else None)
        link = StompLink(conn, self._generation)
        conn.set_listener("idds-vis", ThreadListener(asyncio.get_running_loop(), link,
                                                     self._on_message))  # fmt: skip
        self._link = link
        try:
            async with asyncio.timeout(s.connect_timeout):
                await asyncio.to_thread(conn.connect, s.user, s.password)
                await link.wait_connected()
            relay_to = s.relay_queue
            if relay_to is not None and self._relay_id is not None:
                # First, so that the copies made once the stream flows have a reader.
                await self._subscribe(link, self._relay_id, relay_to, s.relay_prefetch)
            for index, destination in enumerate(s.subscriptions):
                sub_id = f"{s.subscription_id_prefix}-{index}"
                await self._subscribe(link, sub_id, destination, s.prefetch, relay_to)
        except BaseException:
            await self._close(link, graceful=False)
            raise
        return link

    async def _subscribe(
        self,
        link: StompLink,
        sub_id: str,
        destination: str,
        prefetch: int,
        relay_to: str | None = None,
    ) -> None:
        receipt, confirmed = link.expect_receipt()
        headers = {"receipt": receipt, "activemq.prefetchSize": str(prefetch)}
        ack = "client" if relay_to is not None else "client-individual"
        try:
            await asyncio.to_thread(
                link.conn.subscribe, destination, sub_id, ack, headers, relay_to
            )
            async with asyncio.timeout(self.settings.receipt_timeout):
                await confirmed
        finally:
            link.forget_receipt(receipt)

    async def _close(self, link: StompLink, *, graceful: bool) -> None:
        """Close one connection; after this its deliveries are stale and settle as no-ops."""
        if self._link is link:
            self._link = None
        conn = link.conn
        if graceful and link.usable:
            # DISCONNECT with a receipt: the broker has handled every ack sent before it.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.receipt_timeout):
                    await asyncio.to_thread(conn.disconnect, receipt=f"bye-{link.generation}")
        link.on_closed()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_drop_socket, conn)


def _drop_socket(conn: RemoteConnection) -> None:
    """End the receiver process (and with it the connection) whatever state it is in."""
    conn.close()


def _one_line(text: str) -> str:
    flat = _CONTROL.sub(" ", text).strip() or "no reason given"
    return flat if len(flat) <= _MAX_REASON_CHARS else flat[: _MAX_REASON_CHARS - 1] + "…"


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    # stomp.py's ConnectFailedException has no message: name the type too.
    what = f"{type(error).__name__}: {error}".rstrip(": ") if error else "unknown"
    log.warning(
        "STOMP connect attempt %d failed (%s); next try in %.1f s", state.attempt_number, what, wait
    )
