"""Fetch a Rucio DID with Rucio's own DownloadClient, run in a child process we can stop.

The child (``rucio_child``) lists the DID's files and refuses names or totals over the caps
before any transfer; while it downloads, this side measures what it has written and kills it
the moment a cap is passed, so a replica bigger than its catalogue entry cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError, UnsafeArchive
from idds_vis.staging import rucio_child
from idds_vis.staging.caps import Caps
from idds_vis.staging.credentials import Credentials, RucioAccess, Secret, without_credentials
from idds_vis.staging.sources import RucioSource

log = logging.getLogger(__name__)

# Variables through which the Rucio client would pick up another identity or configuration.
_AMBIENT = (
    "RUCIO_", "BEARER_TOKEN", "X509_", "XDG_RUNTIME_DIR", "SITE_NAME", "ATLAS_SITE_NAME",
    "OSG_SITE_NAME", "TMP", "TEMP",
)  # fmt: skip
_TAIL = 8192
_UNREACHABLE = "artefact source unreachable: "
# The child's failure kinds, as our errors and the start of their reasons.
_ERRORS: Mapping[str, tuple[type[StagingError], str]] = {
    "not-found": (SourceUnreachable, _UNREACHABLE),
    "unreachable": (SourceUnreachable, _UNREACHABLE),
    "auth": (SourceUnreachable, _UNREACHABLE),
    "transfer": (SourceUnreachable, _UNREACHABLE),
    "limit": (LimitExceeded, ""),
    "unsafe": (UnsafeArchive, ""),
}


def child_env(work: Path, access: RucioAccess, base: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in without_credentials(base).items() if not k.startswith(_AMBIENT)}
    env.update(
        {
            "RUCIO_CONFIG": str(work / rucio_child.CONFIG),
            "RUCIO_CLIENT_MODE": "1",
            # The client caches its token under the temp dir: a private one, gone afterwards.
            "TMPDIR": str(work / "tmp"),
            # Under the child's file-size limit a bytecode cache write must not be what trips it.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if access.auth_type == "oidc":
        env["BEARER_TOKEN_FILE"] = str(work / rucio_child.TOKEN)
    return env


def _usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
    return files, size


def _read_result(work: Path) -> dict[str, object] | None:
    try:
        data = json.loads((work / rucio_child.RESULT).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RucioFetcher:
    def __init__(
        self,
        credentials: Credentials,
        timeout: float,
        *,
        poll: float = 0.2,
        python: str = sys.executable,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.poll = poll
        self.python = python

    async def fetch(self, source: RucioSource, work: Path, caps: Caps) -> Path:
        """Download the DID under ``work`` (a new private directory the caller removes) in
        Rucio's layout: ``<did name or scope>/<file name>``; return that download directory."""
        access = self.credentials.rucio
        if access is None:
            raise StagingError(
                f"cannot stage {source.shown}: no Rucio settings (rucio_host, rucio_account)"
            )
        if importlib.util.find_spec("rucio") is None:
            raise StagingError(
                f"cannot stage {source.shown}: the Rucio client is not installed"
                " (pip install 'idds-vis[rucio]')"
            )
        download = work / rucio_child.DOWNLOAD
        await asyncio.to_thread(self._prepare, work)
        request = {
            "work": str(work),
            "did": str(source.did),
            "max_bytes": caps.max_bytes,
            "max_files": caps.max_files,
            "rse": access.rse,
            "transfer_timeout": max(1, int(self.timeout)),
            "access": {
                "host": access.host, "auth_host": access.auth_host, "account": access.account,
                "auth_type": access.auth_type, "vo": access.vo, "username": access.username,
                "password": _text(access.password), "token": _text(access.token),
                "x509_proxy": _text(access.x509_proxy), "ca_cert": access.ca_cert,
            },
        }  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "idds_vis.staging.rucio_child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=child_env(work, access, os.environ),
            start_new_session=True,
        )  # fmt: skip
        tail = bytearray()
        reader = asyncio.ensure_future(self._drain(proc, tail))
        try:
            async with asyncio.timeout(self.timeout):
                assert proc.stdin is not None
                # A child that died at once says why in its result, not through a broken pipe.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(json.dumps(request).encode())
                    await proc.stdin.drain()
                proc.stdin.close()
                waiter = asyncio.ensure_future(proc.wait())
                while not waiter.done():
                    await asyncio.wait({waiter}, timeout=self.poll)
                    await self._check_caps(download, caps, source)
        except TimeoutError:
            raise SourceUnreachable(
                f"artefact source unreachable: {source.shown} was not downloaded within"
                f" {self.timeout:g} s"
            ) from None
        finally:
            await self._stop(proc)
            # The child is gone, so its stderr ends; bounded all the same.
            await asyncio.wait({reader}, timeout=2)
            reader.cancel()
        await self._check_caps(download, caps, source)
        if proc.returncode == -signal.SIGXFSZ:
            raise LimitExceeded(
                f"download of {source.shown} passed the cap of {caps.max_bytes} bytes; stopped"
            )
        result = await asyncio.to_thread(_read_result, work)
        if result is None:
            stderr = self.credentials.scrub(tail.decode(errors="replace"))
            log.debug("Rucio child for %s ended without a result; stderr: %s", source.shown, stderr)
            raise StagingError(
                f"the Rucio download of {source.shown} ended without a result"
                f" (exit code {proc.returncode})"
            )
        if not result.get("ok"):
            error, prefix = _ERRORS.get(str(result.get("kind")), (StagingError, ""))
            raise error(prefix + self.credentials.scrub(str(result.get("message"))))
        return download

    @staticmethod
    def _prepare(work: Path) -> None:
        work.chmod(0o700)
        (work / "tmp").mkdir(mode=0o700)
        (work / rucio_child.DOWNLOAD).mkdir(mode=0o700)

    async def _check_caps(self, download: Path, caps: Caps, source: RucioSource) -> None:
        files, size = await asyncio.to_thread(_usage, download)
        if size > caps.max_bytes:
            raise LimitExceeded(
                f"download of {source.shown} passed the cap of {caps.max_bytes} bytes; stopped"
            )
        if files > caps.max_files:
            raise LimitExceeded(
                f"download of {source.shown} passed the cap of {caps.max_files} files; stopped"
            )

    @staticmethod
    async def _drain(proc: asyncio.subprocess.Process, tail: bytearray) -> None:
        # Kept for a debug line on failure only; the client's own output may hold secrets.
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            tail.extend(chunk)
            del tail[:-_TAIL]

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        # Shielded: a cancelled staging must still reap the child it killed.
        await asyncio.shield(proc.wait())


def _text(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None
