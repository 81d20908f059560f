"""Caps on live streams (Server-Sent Events) open at once: per client (the identity, or the
address before sign-in) and in all.

The rate limit counts requests, and a stream is one request that then stays open for minutes:
330 anonymous streams were all accepted. A stream holds a slot from its opening to its end
(``authenticate`` takes it for every ``.../events`` GET and gives it back when the handler
returns). Taking and giving back are plain code between awaits, so no two streams race for the
last slot. Both kinds of stream count: the permalink's and the catalog's.

Each replica counts its own streams, in memory: with N replicas of the web app, up to
N x ``total`` streams are open in all, and one client may hold up to N x ``per_client`` when
the load balancer spreads its connections (``per_client`` with session affinity). That is on
purpose: what the caps protect (a replica's sockets, memory and event loop) is per replica, and
a count shared through the database would cost a write at every opening and end of a stream and
leases for the slots of a crashed replica. docs/how-to/live-progress.md says how to size them.
"""

from __future__ import annotations

from collections import Counter

from idds_vis.api.auth.denials import Denial


class StreamCaps:
    def __init__(self, per_client: int, total: int) -> None:
        if per_client < 1 or total < 1:
            raise ValueError("stream_limit_per_client and stream_limit_total must be at least 1")
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open.total()

    def take(self, client: str) -> Denial | None:
        """Take a slot for ``client``; the reason when there is none."""
        if self._open.total() >= self.total:
            return Denial.STREAMS_TOTAL
        if self._open[client] >= self.per_client:
            return Denial.STREAMS_PER_CLIENT
        self._open[client] += 1
        return None

    def give_back(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def refusal(self, reason: Denial) -> str:
        if reason is Denial.STREAMS_TOTAL:
            return f"this server follows {self.total} live pages already: try again shortly"
        return (
            f"you follow {self.per_client} live pages already: close one (its tab) or try "
            "again shortly"
        )
