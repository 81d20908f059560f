from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from idds_vis.domain.models import VisRequest


class MessageSource(Protocol):
    """A stream of requests (broker, poller); ``ack`` only after the request is durable."""

    def requests(self) -> AsyncIterator[tuple[VisRequest, object]]: ...

    async def ack(self, token: object) -> None: ...
