from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """One message as a source delivered it; settle it exactly once (ack, nack or dead_letter).

    ``attempt`` counts local redeliveries after ``nack`` (1 the first time). ``token`` is the
    adapter's own bookkeeping (which connection, which ack id) and means nothing to callers.
    """

    headers: Mapping[str, str]
    body: bytes
    message_id: str
    subscription: str
    destination: str = ""
    attempt: int = 1
    token: object = field(default=None, compare=False, repr=False)


class MessageSource(Protocol):
    """A stream of broker messages; the intake settles each one after deciding its fate.

    Settling a delivery whose connection has since been lost is a no-op: the broker still
    holds the message and delivers it again, which is why everything downstream is idempotent.
    """

    async def start(self) -> None:
        """Begin connecting in the background; returns without waiting for the broker."""
        ...

    async def stop(self) -> None:
        """Disconnect; ``messages()`` then ends. Unsettled deliveries go back to the broker."""
        ...

    def messages(self) -> AsyncIterator[Delivery]:
        """Deliveries as they arrive, across reconnects, until ``stop()``."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """Done with it: call only once what it asked for is durable."""
        ...

    async def nack(self, delivery: Delivery) -> None:
        """Not now: deliver it again later (with a growing delay), ``attempt`` + 1."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Never processable: keep it (body and reason) where people look, then ack it.

        Returns only once the copy is safely stored; raises if it could not be, and then the
        original is not acked.
        """
        ...
