"""Relayed subscriptions: one cumulative ACK for many messages, nothing held behind a slow one.

With ``ack: client`` one ACK frame settles every message delivered before it on the
subscription, so the broker parses one frame and removes one range instead of one message per
frame; ``tests/bench/bench_ack_modes.py`` measured about half the broker's CPU per message. The
price is that only a prefix may be acked: a message that is still being decided holds back the
acks of all that came after it, and once ``prefetch`` of them are held the broker stops
dispatching. A PanDA lookup or a retry (up to ``retry_max``) would stall the stream.

So a relayed subscription never decides anything slow itself. The receiver process parses each
message where it arrives; one that is ignored is settled at once, and every other one (a
trigger, a malformed message) is sent on to the relay queue (persistent, with a receipt) and is
settled when the broker's RECEIPT says the copy is stored. The intake consumes the relay queue
with ``client-individual`` acks and all of its usual guarantees: ack after commit, a retry
waits off the stream, a dead letter is stored before its ack. The only thing the stream waits
for is the broker storing a copy.

A crash between the copy and the cumulative ACK delivers the original again, and it is copied
again: a duplicate on the relay queue, which the ledger absorbs (it is idempotent by task and
tool). Nothing is lost.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

# The headers a relayed copy carries to say where it came from (dead letters carry them too).
ORIGINAL_DESTINATION_HEADER = "idds-vis-original-destination"
ORIGINAL_MESSAGE_ID_HEADER = "idds-vis-original-message-id"

# Set by the broker on delivery, or meaningless on a new SEND: not copied. ``expires`` is
# dropped too: the original was delivered in time, and its copy must not expire while a retry
# of its lookup waits.
_NOT_COPIED = frozenset(
    {
        "message-id",
        "destination",
        "subscription",
        "ack",
        "content-length",
        "redelivered",
        "timestamp",
        "expires",
        "receipt",
        "persistent",
    }
)


def relay_headers(headers: Mapping[str, str], receipt: str) -> dict[str, str]:
    """The SEND headers of a message's copy on the relay queue."""
    copied = {k: v for k, v in headers.items() if k not in _NOT_COPIED}
    copied.update(
        {
            "persistent": "true",
            "receipt": receipt,
            ORIGINAL_DESTINATION_HEADER: headers.get("destination", ""),
            ORIGINAL_MESSAGE_ID_HEADER: headers.get("message-id", ""),
        }
    )
    return copied


@dataclass(slots=True)
class _Waiting:
    ack_id: str
    settled: bool
    ignored: bool


class Watermark:
    """What one ``ack: client`` subscription may ack: the newest message with every earlier one
    settled. Used from stomp.py's receiver thread and the reporter thread, hence the lock.

    Messages are numbered in arrival order (stomp.py delivers a subscription's messages in
    order); ``arrive`` returns the number that ``settle`` takes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting] = deque()  # oldest first
        self._first = 0  # the number of the oldest waiting message
        self._mark: str | None = None  # the ack id to send, covering `_due` messages
        self._due = 0
        self._due_ignored = 0

    def arrive(self, ack_id: str, *, settled: bool, ignored: bool = False) -> int:
        with self._lock:
            number = self._first + len(self._waiting)
            self._waiting.append(_Waiting(ack_id, settled, ignored))
            if settled and len(self._waiting) == 1:
                self._advance()
            return number

    def settle(self, number: int) -> None:
        with self._lock:
            index = number - self._first
            if 0 <= index < len(self._waiting):
                self._waiting[index].settled = True
                if index == 0:
                    self._advance()

    def _advance(self) -> None:
        while self._waiting and self._waiting[0].settled:
            oldest = self._waiting.popleft()
            self._first += 1
            self._mark = oldest.ack_id
            self._due += 1
            self._due_ignored += oldest.ignored

    @property
    def due(self) -> int:
        """How many settled messages the next ACK would cover."""
        return self._due

    @property
    def held(self) -> int:
        """Messages delivered and not yet acked: the broker's window counts these."""
        with self._lock:
            return self._due + len(self._waiting)

    def take(self, at_least: int = 1) -> tuple[str, int] | None:
        """The ack id to send now and how many ignored messages it covers, once at least
        ``at_least`` messages are due; None otherwise."""
        with self._lock:
            if self._mark is None or self._due < at_least:
                return None
            taken = (self._mark, self._due_ignored)
            self._mark, self._due, self._due_ignored = None, 0, 0
            return taken
