"""The Stager adapter: a directory, archive file or archive URL into a private directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from idds_vis.domain.errors import NoMlflowData, SourceUnreachable, StagingError
from idds_vis.domain.models import StagedArtefacts
from idds_vis.staging.caps import GIB, Budget, Caps
from idds_vis.staging.credentials import Credentials
from idds_vis.staging.dir_copy import copy_directory
from idds_vis.staging.download import download
from idds_vis.staging.errors import NotAnArchive
from idds_vis.staging.layout import detect_layout
from idds_vis.staging.manifest import write_manifest
from idds_vis.staging.paths import clear_directory, verify_links
from idds_vis.staging.rewrite import rewrite_artifact_locations
from idds_vis.staging.rucio import RucioFetcher
from idds_vis.staging.s3 import S3Fetcher
from idds_vis.staging.sources import (
    HttpSource,
    LocalSource,
    RucioSource,
    S3Source,
    Source,
    describe,
    parse_source,
)
from idds_vis.staging.tar_extract import extract_tar
from idds_vis.staging.tar_headers import is_tar
from idds_vis.staging.unpack_tree import unpack_tree
from idds_vis.staging.zip_extract import extract_zip

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _in_thread(fn: Callable[[threading.Event], T]) -> T:
    """Run blocking work in a thread; on cancellation, stop it and wait for it to stop,
    so that the cleanup which follows does not race a thread still writing files."""
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(fn, stop))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await future
        raise


def _prepare(dest: Path) -> bool:
    """Create dest private; True if we created it (so a failure may remove it again).

    An existing dest is emptied: staging again (a retry, a restart) replaces what an
    earlier attempt left, which may be half written or made read-only for a UI.
    """
    try:
        dest.mkdir(mode=0o700, parents=True)
        return True
    except FileExistsError:
        if dest.is_symlink() or not dest.is_dir():
            raise StagingError(f"staging directory {dest} exists and is not a directory") from None
        dest.chmod(0o700)
        clear_directory(dest)
        return False


def _remove(path: Path) -> None:
    """A download's temporary file or directory, whatever state the staging left it in."""
    if path.is_dir() and not path.is_symlink():
        clear_directory(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _discard(dest: Path, created: bool) -> None:
    try:
        clear_directory(dest)
        if created:
            dest.rmdir()
    except OSError:
        # The original failure is the one worth reporting; this only goes to the log.
        log.exception("could not clean up staging directory %s", dest)


class ArchiveStager:
    """Stages from a local directory or tar/zip archive, an http(s) archive URL, an S3 object
    or prefix, or a Rucio DID. ``credentials`` is called (in a thread) for every staging from a
    remote source, so rotated tokens and keys are read afresh."""

    def __init__(
        self,
        max_bytes: int = 2 * GIB,
        max_files: int = 20000,
        http_timeout: float = 300,
        rewrite_locations: bool = True,
        credentials: Callable[[], Credentials] | None = None,
    ) -> None:
        self.caps = Caps(max_bytes=max_bytes, max_files=max_files)
        self.http_timeout = http_timeout
        self.rewrite_locations = rewrite_locations
        self.credentials = credentials

    async def stage(self, source: str, dest: Path) -> StagedArtefacts:
        parsed = parse_source(source)
        shown = describe(parsed)
        dest = Path(await asyncio.to_thread(os.path.abspath, dest))
        created = await asyncio.to_thread(_prepare, dest)
        leftovers: list[Path] = []
        try:
            await self._fetch_and_fill(parsed, dest, shown, leftovers)
            return await _in_thread(lambda _stop: self._finish(dest, shown))
        except BaseException:
            await asyncio.to_thread(_discard, dest, created)
            raise
        finally:
            for path in leftovers:
                await asyncio.to_thread(_remove, path)

    async def _fetch_and_fill(
        self, parsed: Source, dest: Path, shown: str, leftovers: list[Path]
    ) -> None:
        if isinstance(parsed, LocalSource):
            local = parsed.path
            await _in_thread(lambda stop: self._fill(local, dest, shown, stop))
            return
        credentials = Credentials()
        if self.credentials is not None:
            credentials = await asyncio.to_thread(self.credentials)
        if isinstance(parsed, HttpSource):
            token = credentials.http_token_for(parsed.url)
            fetched = await download(
                parsed, dest.parent, self.caps.max_bytes, self.http_timeout, token=token
            )
            leftovers.append(fetched)
            await _in_thread(lambda stop: self._fill(fetched, dest, shown, stop))
        elif isinstance(parsed, S3Source):
            s3 = S3Fetcher(credentials.s3, self.http_timeout)
            work = Path(
                await asyncio.to_thread(tempfile.mkdtemp, prefix=".idds-vis-s3-", dir=dest.parent)
            )
            leftovers.append(work)
            obj = await s3.fetch(parsed, dest.parent, work, Budget(self.caps, shown))
            if obj is not None:
                leftovers.append(obj)
                await _in_thread(lambda stop: self._fill(obj, dest, shown, stop))
            else:
                await _in_thread(lambda stop: self._place_tree(work, dest, shown, stop))
        elif isinstance(parsed, RucioSource):
            work = Path(
                await asyncio.to_thread(
                    tempfile.mkdtemp, prefix=".idds-vis-rucio-", dir=dest.parent
                )
            )
            leftovers.append(work)
            fetcher = RucioFetcher(credentials, self.http_timeout)
            downloaded = await fetcher.fetch(parsed, work, self.caps)
            await _in_thread(
                lambda stop: unpack_tree(downloaded, dest, Budget(self.caps, shown, stop))
            )

    def _place_tree(self, tree: Path, dest: Path, shown: str, stop: threading.Event) -> None:
        """A downloaded prefix: an MLflow store as it is (its artefacts may be archives that
        must stay archives); otherwise job outputs, whose tarballs are unpacked."""
        try:
            detect_layout(tree, shown)
        except NoMlflowData:
            unpack_tree(tree, dest, Budget(self.caps, shown, stop))
        else:
            copy_directory(tree, dest, Budget(self.caps, shown, stop))

    def _fill(self, local: Path, dest: Path, shown: str, stop: threading.Event) -> None:
        if not local.exists():
            raise SourceUnreachable(
                f"artefact source unreachable: no such file or directory {shown}"
            )
        try:
            if local.is_dir():
                copy_directory(local, dest, Budget(self.caps, "source directory", stop))
            elif not local.is_file():
                raise NotAnArchive(f"artefact source {shown} is not a regular file")
            # Tar first: a tar whose last member is a zip also passes is_zipfile.
            elif is_tar(str(local), self.caps.max_entries):
                extract_tar(local, dest, Budget(self.caps, "archive", stop))
            elif zipfile.is_zipfile(local):
                extract_zip(local, dest, Budget(self.caps, "archive", stop))
            else:
                raise NotAnArchive(
                    f"artefact source {shown} is neither a directory nor a tar or zip archive"
                )
        except PermissionError as exc:
            raise StagingError(f"cannot read artefact source {shown}: permission denied") from exc
        verify_links(dest)

    def _finish(self, dest: Path, shown: str) -> StagedArtefacts:
        layout = detect_layout(dest, shown)
        if layout.layout == "sqlite" and self.rewrite_locations:
            try:
                rewrite_artifact_locations(layout.store_path, dest)
            except sqlite3.Error as exc:
                rel = layout.store_path.relative_to(dest)
                raise StagingError(f"could not rewrite artefact locations in {rel}: {exc}") from exc
        manifest = write_manifest(dest)
        return StagedArtefacts(
            root=str(dest),
            layout=layout.layout,
            store_path=str(layout.store_path),
            experiments=layout.experiments,
            files=manifest.files,
            bytes=manifest.bytes,
        )
