"""Byte and file-count caps, counted while data is written so lying headers cannot slip by."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from idds_vis.domain.errors import LimitExceeded
from idds_vis.staging.errors import StagingInterrupted

GIB = 1024**3


@dataclass(frozen=True)
class Caps:
    max_bytes: int = 2 * GIB
    max_files: int = 20000

    @property
    def max_entries(self) -> int:
        """Headers an archive may hold: up to max_files files and as many directories. Every
        header counts, even one that creates nothing (a directory named again, an entry we
        skip), since reading each costs memory and CPU before any cap on files is reached."""
        return 2 * self.max_files


class Budget:
    """Running totals for one staging; ``what`` names the thing in messages ("archive")."""

    def __init__(self, caps: Caps, what: str, stop: threading.Event | None = None) -> None:
        self.caps = caps
        self.what = what
        self.files = 0
        self.dirs = 0
        self.bytes = 0
        self._stop = stop

    def check_declared(self, files: int, dirs: int, size: int) -> None:
        """Refuse before writing anything when the headers already say it is too big,
        counting what this staging wrote before (several archives share one budget)."""
        self._check(self.files + files, self.dirs + dirs, self.bytes + size)

    def add_file(self) -> None:
        self.check_stop()
        self.files += 1
        self._check(self.files, self.dirs, self.bytes)

    def add_dir(self) -> None:
        self.check_stop()
        self.dirs += 1
        self._check(self.files, self.dirs, self.bytes)

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        self._check(self.files, self.dirs, self.bytes)

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise StagingInterrupted("staging was cancelled")

    def _check(self, files: int, dirs: int, size: int) -> None:
        caps = self.caps
        if files > caps.max_files:
            raise LimitExceeded(
                f"{self.what} holds {files} files, over the cap of {caps.max_files}"
            )
        # Directories are cheap but not free: a million empty ones is still an inode bomb.
        if dirs > caps.max_files:
            raise LimitExceeded(
                f"{self.what} holds {dirs} directories, over the cap of {caps.max_files}"
            )
        if size > caps.max_bytes:
            raise LimitExceeded(
                f"{self.what} holds {size} bytes, over the cap of {caps.max_bytes} bytes"
            )
