"""Fetch from S3-compatible storage with aiobotocore, so transfers never block the event loop.

One object is fetched into a temporary file (then unpacked like any archive); a prefix is
written object by object into the staging directory. Both count bytes and files as they
arrive. Reasons name the bucket, the key and the cause, never a key or secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import aiohttp

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.credentials import S3Access
from idds_vis.staging.paths import entry_path, is_reserved
from idds_vis.staging.redact import redact_url
from idds_vis.staging.sources import S3Source

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_s3.client import S3Client

_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}
_MISSING = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> AioSession:
    """One botocore session per process, its S3 model loaded: importing aiobotocore and parsing
    the model files takes about a second of CPU, which must not happen on the event loop."""
    with _SESSION_LOCK:
        from aiobotocore.session import get_session

        session = get_session()
        loader = session.get_component("data_loader")
        loader.load_service_model("s3", "service-2")
        loader.load_service_model("s3", "endpoint-rule-set-1")
        for name in ("endpoints", "partitions", "sdk-default-configuration"):
            loader.load_data(name)
        return session


@contextlib.asynccontextmanager
async def _client(access: S3Access | None, attempts: int) -> AsyncIterator[S3Client]:
    session = await asyncio.to_thread(_session)
    from aiobotocore.config import AioConfig
    from botocore import UNSIGNED

    access = access or S3Access()
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": attempts},
        "connect_timeout": 20,
        "read_timeout": 60,
    }
    if not access.signed:
        # Unsigned: no credential chain is consulted (it would reach for an instance
        # metadata service), so an anonymous bucket is all this can read.
        options["signature_version"] = UNSIGNED
    if access.endpoint_url:
        # S3-compatible servers are addressed by path; virtual hosts need wildcard DNS.
        options["s3"] = {"addressing_style": "path"}
    key_id = access.access_key_id.reveal() if access.access_key_id else None
    secret = access.secret_access_key.reveal() if access.secret_access_key else None
    async with session.create_client(
        "s3",
        endpoint_url=access.endpoint_url,
        region_name=access.region or "us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=AioConfig(**options),
    ) as client:
        yield client


def _open_temp(directory: Path) -> tuple[Path, BinaryIO]:
    fd, name = tempfile.mkstemp(prefix=".idds-vis-download-", dir=directory)
    return Path(name), os.fdopen(fd, "wb")


def _close_and_drop(path: Path, out: BinaryIO) -> None:
    out.close()
    path.unlink(missing_ok=True)


def _open_new(path: Path) -> BinaryIO:
    return os.fdopen(os.open(path, _CREATE, 0o644), "wb")


class S3Fetcher:
    def __init__(self, access: S3Access | None, timeout: float, attempts: int = 3) -> None:
        self.access = access
        self.timeout = timeout
        self.attempts = attempts

    @property
    def _endpoint(self) -> str:
        url = self.access.endpoint_url if self.access else None
        return redact_url(url) if url else "AWS S3"

    async def fetch(
        self, source: S3Source, directory: Path, dest: Path, budget: Budget
    ) -> Path | None:
        """An object: its temporary file in ``directory`` (the caller removes it). A prefix
        (a key ending in '/', or one that is no object): written under ``dest``, None returned."""
        try:
            async with asyncio.timeout(self.timeout), _client(self.access, self.attempts) as s3:
                if source.key and not source.key.endswith("/"):
                    size = await self._size(s3, source)
                    if size is not None:
                        return await self._object(s3, source, size, directory, budget)
                    source = S3Source(source.bucket, source.key + "/")
                await self._prefix(s3, source, dest, budget)
                return None
        except TimeoutError as exc:
            raise SourceUnreachable(
                f"artefact source unreachable: no complete answer within {self.timeout:g} s"
                f" from {self._endpoint} for {source.shown}"
            ) from exc
        except StagingError:
            raise
        except Exception as exc:
            raise self._reason(exc, source) from exc

    async def _size(self, s3: S3Client, source: S3Source) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await s3.head_object(Bucket=source.bucket, Key=source.key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        # A server that states no size is held to the cap while the bytes arrive.
        return int(head.get("ContentLength") or 0)

    async def _object(
        self, s3: S3Client, source: S3Source, size: int, directory: Path, budget: Budget
    ) -> Path:
        limit = budget.caps.max_bytes
        if size > limit:
            raise LimitExceeded(f"{source.shown} is {size} bytes, over the cap of {limit} bytes")
        path, out = await asyncio.to_thread(_open_temp, directory)
        try:
            try:
                await self._copy(s3, source.bucket, source.key, out, budget)
            except LimitExceeded:
                raise LimitExceeded(
                    f"download of {source.shown} passed the cap of {limit} bytes; stopped"
                ) from None
            await asyncio.to_thread(out.close)
        except BaseException:
            await asyncio.to_thread(_close_and_drop, path, out)
            raise
        return path

    async def _copy(
        self, s3: S3Client, bucket: str, key: str, out: BinaryIO, budget: Budget
    ) -> None:
        response = await s3.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            # Counted as received: the listing's sizes are only what the server claimed.
            while chunk := await body.read(_CHUNK):
                budget.add_bytes(len(chunk))
                await asyncio.to_thread(out.write, chunk)

    async def _prefix(self, s3: S3Client, source: S3Source, dest: Path, budget: Budget) -> None:
        listed = await self._list(s3, source, budget)
        if not listed:
            raise SourceUnreachable(
                f"artefact source unreachable: no object or prefix {source.shown}"
            )
        for rel, key in listed:
            budget.check_stop()
            target = dest / rel
            await asyncio.to_thread(self._make_parents, dest, rel.parent, budget)
            budget.add_file()
            try:
                out = await asyncio.to_thread(_open_new, target)
            except OSError as exc:
                raise StagingError(
                    f"cannot write object {key} of {source.shown} to '{rel}': {exc.strerror}"
                ) from exc
            try:
                await self._copy(s3, source.bucket, key, out, budget)
            finally:
                await asyncio.to_thread(out.close)

    async def _list(
        self, s3: S3Client, source: S3Source, budget: Budget
    ) -> list[tuple[PurePosixPath, str]]:
        """(path under dest, key) of every object under the prefix; refused by the caps as the
        listing arrives, before a byte is fetched."""
        found: list[tuple[PurePosixPath, str]] = []
        dirs: set[PurePosixPath] = set()
        total = 0
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=source.bucket, Prefix=source.key):
            for item in page.get("Contents", []):
                key = item["Key"]
                tail = key[len(source.key) :]
                if not tail or tail.endswith("/"):
                    continue  # a "folder" marker some tools write; the files make the folders
                try:
                    rel = entry_path(tail)
                except UnsafeArchive:
                    raise UnsafeArchive(
                        f"object s3://{source.bucket}/{key} leaves the staging directory"
                    ) from None
                if rel is None or is_reserved(rel):
                    continue
                found.append((rel, key))
                dirs.update(rel.parents)
                total += int(item.get("Size", 0))
                budget.check_declared(len(found), len(dirs) - 1, total)
        return sorted(found)

    @staticmethod
    def _make_parents(dest: Path, rel: PurePosixPath, budget: Budget) -> None:
        here = dest
        for part in rel.parts:
            here = here / part
            if not here.is_dir() or here.is_symlink():
                budget.add_dir()
                here.mkdir(mode=0o700)

    def _reason(self, exc: Exception, source: S3Source) -> StagingError:
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        shown = source.shown
        if isinstance(exc, ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _DENIED or status == 403:
                why = f"access denied ({code})"
            elif code in _MISSING or status == 404:
                why = "no such bucket" if code == "NoSuchBucket" else f"not found ({code})"
            else:
                why = f"S3 error {code} (HTTP {status})"
            return SourceUnreachable(f"artefact source unreachable: {why} at {shown}")
        if isinstance(exc, ConnectionError):
            return SourceUnreachable(
                f"artefact source unreachable: cannot connect to {self._endpoint} for {shown}"
            )
        if isinstance(exc, HTTPClientError | aiohttp.ClientError):
            return SourceUnreachable(f"artefact source unreachable: transfer broken off at {shown}")
        # Never str(exc): botocore's texts may carry request details.
        return StagingError(f"could not fetch {shown}: {type(exc).__name__}")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
