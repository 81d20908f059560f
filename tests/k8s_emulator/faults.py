"""Request accounting and injected failures, for tests of client retry and timeout paths."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass

from .errors import ApiError


@dataclass(frozen=True)
class RequestInfo:
    """What kube-apiserver's RequestInfo resolver would say about a request."""

    method: str
    path: str
    verb: str  # get list watch create update patch delete deletecollection, or "discovery"
    resource: str  # plural, "plural/subresource", or "" for non-resource paths
    namespace: str | None = None
    name: str | None = None


@dataclass
class Fault:
    """Matches requests by any of verb/resource/namespace/name/path regex (None: any)."""

    action: str  # "fail" or "hang"
    status: int = 500
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    path: str | None = None
    times: int | None = 1  # None: until cleared
    retry_after: int | None = None
    message: str | None = None
    hits: int = 0

    def matches(self, info: RequestInfo) -> bool:
        return (
            (self.verb is None or self.verb == info.verb)
            and (self.resource is None or self.resource == info.resource)
            and (self.namespace is None or self.namespace == info.namespace)
            and (self.name is None or self.name == info.name)
            and (self.path is None or re.search(self.path, info.path) is not None)
        )


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self.log: list[RequestInfo] = []
        self._released = asyncio.Event()

    def record(self, info: RequestInfo) -> None:
        self.requests[(info.verb, info.resource)] += 1
        self.log.append(info)

    def add(self, fault: Fault) -> Fault:
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        self.rules.clear()

    def release_hangs(self) -> None:
        """Let hanging requests end (they then fail with 504), e.g. at shutdown."""
        self._released.set()

    async def apply(self, info: RequestInfo) -> None:
        for fault in list(self.rules):
            if not fault.matches(info):
                continue
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.rules.remove(fault)
            if fault.action == "hang":
                await self._released.wait()
                raise ApiError(504, "the server was shut down while the request hung")
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            message = fault.message or _default_message(fault.status)
            raise ApiError(fault.status, message, headers=headers)


def _default_message(code: int) -> str:
    return {
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: injected by the emulator",
        503: "the server is currently unable to handle the request",
        504: "Timeout: request did not complete within the allotted timeout",
        403: "forbidden: the emulator was told to refuse this request",
    }.get(code, "injected failure")
