"""Watch streams: newline-delimited JSON events over a chunked HTTP response."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import bad_request, status_body
from .resources import ResourceType
from .selectors import LabelSelector
from .store import Change, Store


@dataclass
class WatchStream:
    rt: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: Callable[[Mapping[str, Any]], bool]
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    # A silenced stream keeps its connection open but never writes again, like a watch whose
    # TCP connection died without a FIN: clients only notice through their own timeouts.
    silent: bool = False

    def wants(self, change: Change) -> bool:
        return change.plural == self.rt.plural and (
            self.namespace is None or change.namespace == self.namespace
        )

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        return (
            obj is not None
            and self.labels.matches(obj["metadata"].get("labels"))
            and self.fields(obj)
        )

    def translate(self, change: Change) -> dict[str, Any] | None:
        """The event this watcher sees, given its selectors (None: nothing)."""
        now_in = change.type != "DELETED" and self.matches(change.obj)
        before_in = self.matches(change.prev) if change.type != "ADDED" else False
        if change.type == "DELETED":
            kind = "DELETED" if before_in else None
        elif now_in and before_in:
            kind = "MODIFIED"
        elif now_in:
            kind = "ADDED"
        elif before_in:
            kind = "DELETED"
        else:
            kind = None
        return {"type": kind, "object": change.obj} if kind else None


class Watches:
    """All open watch streams, and the hooks tests use to misbehave them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.streams: list[WatchStream] = []
        store.subscribe(self._fan_out)

    def _fan_out(self, change: Change) -> None:
        for stream in self.streams:
            if stream.wants(change):
                stream.queue.put_nowait(change)

    def silence(self, plural: str | None = None) -> int:
        hit = [s for s in self.streams if plural is None or s.rt.plural == plural]
        for s in hit:
            s.silent = True
        return len(hit)

    def close_all(self) -> None:
        for s in self.streams:
            s.queue.put_nowait(None)

    async def serve(
        self,
        request: web.Request,
        stream: WatchStream,
        resource_version: str | None,
        timeout: float | None,
    ) -> web.StreamResponse:
        initial: list[dict[str, Any]] = []
        if resource_version in (None, "", "0"):
            # "Get state and start at most recent": synthetic ADDED for what exists now.
            initial = [
                {"type": "ADDED", "object": o}
                for o in self.store.items(stream.rt.plural, stream.namespace)
                if stream.matches(o)
            ]
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resource version: {resource_version}") from None
            changes = self.store.changes_since(since)
            if changes is None:
                initial = [
                    {
                        "type": "ERROR",
                        "object": status_body(
                            410,
                            f"too old resource version: {since} ({self.store.current_rv})",
                            "Expired",
                        ),
                    }
                ]
            else:
                initial = [
                    e for c in changes if stream.wants(c) if (e := stream.translate(c)) is not None
                ]
        expired = bool(initial) and initial[0]["type"] == "ERROR"
        # Subscribing in the same synchronous step as reading history leaves no gap.
        if not expired:
            self.streams.append(stream)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            while not expired:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(stream.queue.get(), remaining)
                except TimeoutError:
                    break
                if change is None:
                    break
                translated = stream.translate(change)
                if translated is not None and not stream.silent:
                    await response.write(json.dumps(translated).encode() + b"\n")
        except ConnectionResetError:
            return response
        finally:
            if stream in self.streams:
                self.streams.remove(stream)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
