"""Fetch an archive over http(s) into a temp file, enforcing the byte cap while streaming."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import aiohttp

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError
from idds_vis.staging.credentials import Secret
from idds_vis.staging.sources import HttpSource

_CHUNK = 1 << 20


def _open_temp(directory: Path) -> tuple[Path, BinaryIO]:
    fd, name = tempfile.mkstemp(prefix=".idds-vis-download-", dir=directory)
    return Path(name), os.fdopen(fd, "wb")


def _close_and_drop(path: Path, out: BinaryIO) -> None:
    out.close()
    path.unlink(missing_ok=True)


def _why(exc: aiohttp.ClientError) -> str:
    # Never str(exc): aiohttp repeats the full URL there, credentials and all.
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
) -> Path:
    """Stream source.url into a new file in directory and return its path.

    ``timeout`` bounds the whole transfer, so a server trickling bytes cannot hold a
    staging slot forever. A ``token`` goes as a bearer token to the source's host only:
    aiohttp drops the header on a redirect to another origin.
    """
    shown = source.shown
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else None
    path, out = await asyncio.to_thread(_open_temp, directory)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
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
