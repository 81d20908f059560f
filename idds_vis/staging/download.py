"""Fetch an archive over http(s) into a temp file, enforcing the byte cap while streaming.

With an ``AddressPolicy`` (sources named by broker messages), the download may reach only the
addresses the policy allows: names are resolved by ``GuardedResolver``, which drops refused
addresses, and every socket is made by ``guarded_socket_factory``, which refuses to create one
for a refused address. The factory sees the very address aiohttp is about to connect to (IP
literals skip the resolver; a name that resolves again to another address between a check and
the connection cannot slip past), on the first request and on every redirect. Failures then
carry one public reason, ``artefact source unreachable``, whatever happened (refused address,
404, connection refused, timeout): what an internal URL is or whether it exists is not told;
the detail goes to the log for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError
from idds_vis.domain.source_policy import AddressPolicy
from idds_vis.staging.credentials import Secret
from idds_vis.staging.sources import HttpSource

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
PUBLIC_UNREACHABLE = "artefact source unreachable"

# The guard of the staging running in this task (``guarded``): the stager in between
# (``ArchiveStager``) needs no parameter for it, and other tasks' stagings are not affected.
_GUARD: contextvars.ContextVar[AddressPolicy | None] = contextvars.ContextVar(
    "idds_vis_download_guard", default=None
)


@contextlib.contextmanager
def guarded(policy: AddressPolicy) -> Iterator[None]:
    """Every ``download`` in this task (and threads it starts) uses ``policy`` until exit."""
    token = _GUARD.set(policy)
    try:
        yield
    finally:
        _GUARD.reset(token)


class AddressRefused(OSError):
    """Staging was about to reach an address the policy refuses."""

    def __init__(self) -> None:
        super().__init__(errno.EACCES, "address not allowed for artefact sources from messages")


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, keeping only the addresses the policy allows.

    A host name the operator listed in ``allow_private_addresses`` keeps every address, and
    those addresses are remembered in ``listed`` so the socket factory accepts them too.
    """

    def __init__(self, policy: AddressPolicy, listed: set[str]) -> None:
        self.policy = policy
        self.listed = listed
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self.policy.name_allowed(host):
            self.listed.update(str(r["host"]) for r in found)
            return found
        kept = [r for r in found if self.policy.allows(str(r["host"]))]
        if not kept:
            raise AddressRefused()
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(
    policy: AddressPolicy, listed: set[str]
) -> Callable[[tuple[Any, ...]], socket.socket]:
    """aiohttp's ``socket_factory``: no socket for an address the policy refuses."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _canon, sockaddr = addr_info
        address = str(sockaddr[0])
        if address not in listed and not policy.allows(address):
            raise AddressRefused()
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def _session(timeout: float, guard: AddressPolicy | None) -> aiohttp.ClientSession:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    if guard is None:
        return aiohttp.ClientSession(timeout=client_timeout)
    listed: set[str] = set()
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard, listed),
        socket_factory=guarded_socket_factory(guard, listed),
        use_dns_cache=False,  # each connection resolves (and is checked) afresh
    )
    # trust_env stays False: no proxy from the environment may carry the request elsewhere.
    return aiohttp.ClientSession(timeout=client_timeout, connector=connector)


def _open_temp(directory: Path) -> tuple[Path, BinaryIO]:
    fd, name = tempfile.mkstemp(prefix=".idds-vis-download-", dir=directory)
    return Path(name), os.fdopen(fd, "wb")


def _close_and_drop(path: Path, out: BinaryIO) -> None:
    out.close()
    path.unlink(missing_ok=True)


def _why(exc: aiohttp.ClientError) -> str:
    # Never str(exc): aiohttp repeats the full URL there, credentials and all.
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, AddressRefused):
        return "refused: the address is not allowed for artefact sources from messages"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "transfer broken off"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    return type(exc).__name__


async def download(
    source: HttpSource,
    directory: Path,
    max_bytes: int,
    timeout: float,
    token: Secret | None = None,
    guard: AddressPolicy | None = None,
) -> Path:
    """Stream source.url into a new file in directory and return its path.

    ``timeout`` bounds the whole transfer, so a server trickling bytes cannot hold a
    staging slot forever. A ``token`` goes as a bearer token to the source's host only:
    aiohttp drops the header on a redirect to another origin. ``guard``: reach only the
    addresses it allows, and fail with the one public reason (module docstring).
    """
    guard = guard if guard is not None else _GUARD.get()
    if guard is None:
        return await _download(source, directory, max_bytes, timeout, token, None)
    try:
        return await _download(source, directory, max_bytes, timeout, token, guard)
    except SourceUnreachable as exc:
        # The detail (address refused, HTTP status, connection refused...) is for operators.
        log.warning("artefact source from a message unreachable: %s", exc.reason)
        raise SourceUnreachable(PUBLIC_UNREACHABLE) from None


async def _download(
    source: HttpSource,
    directory: Path,
    max_bytes: int,
    timeout: float,
    token: Secret | None,
    guard: AddressPolicy | None,
) -> Path:
    shown = source.shown
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else None
    path, out = await asyncio.to_thread(_open_temp, directory)
    try:
        async with (
            _session(timeout, guard) as session,
            session.get(source.url, headers=headers) as response,
        ):
            if not 200 <= response.status < 300:
                raise SourceUnreachable(
                    f"artefact source unreachable: HTTP {response.status} at {shown}"
                )
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise LimitExceeded(
                    f"download of {shown} is {declared} bytes (Content-Length),"
                    f" over the cap of {max_bytes} bytes"
                )
            received = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise LimitExceeded(
                        f"download of {shown} passed the cap of {max_bytes} bytes; stopped"
                    )
                await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.close)
    except StagingError:
        await asyncio.to_thread(_close_and_drop, path, out)
        raise
    except TimeoutError as exc:
        await asyncio.to_thread(_close_and_drop, path, out)
        raise SourceUnreachable(
            f"artefact source unreachable: no complete answer within {timeout:g} s from {shown}"
        ) from exc
    except aiohttp.ClientError as exc:
        await asyncio.to_thread(_close_and_drop, path, out)
        raise SourceUnreachable(f"artefact source unreachable: {_why(exc)} at {shown}") from exc
    except BaseException:
        await asyncio.to_thread(_close_and_drop, path, out)
        raise
    return path
