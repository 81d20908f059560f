"""What an archive may create, checked as a whole before anything is written.

Tar and zip members arrive as (path, kind, link target). The plan refuses, each with a one-line
reason, everything that could make a write land anywhere but at its own lexical path: a name
used twice (a link replaced by a file, or a file by a link), a member under a file or a link,
and a link to anything but a regular file of the archive reached through plain directories.
With links created after everything else (the writers do that), no member is ever written
through a link, and the lexical path is the real one.

Links are kept, but only to regular files: MLflow stores need none, a training job may still
leave a ``latest.ckpt -> epoch-9.ckpt``, and refusing the whole archive for it would lose data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from idds_vis.domain.errors import UnsafeArchive
from idds_vis.staging.paths import shown


class Kind(Enum):
    DIR = "directory"
    FILE = "regular file"
    SYMLINK = "symlink"
    HARDLINK = "hard link"


@dataclass(frozen=True)
class Link:
    rel: PurePosixPath
    target: PurePosixPath  # relative to the root; always a regular file of the plan
    hard: bool

    @property
    def text(self) -> str:
        """A symlink's target re-aimed from its own directory, with no detour in it."""
        up = self.rel.parent.parts
        down = self.target.parts
        common = 0
        while common < min(len(up), len(down) - 1) and up[common] == down[common]:
            common += 1
        return "/".join([".."] * (len(up) - common) + list(down[common:]))


# Deeper than any MLflow store or model, and shallow enough for every recursive walk later on
# (os.walk in 3.11 recurses once per level).
MAX_DEPTH = 64


class Plan:
    """Members in the order given; ``dirs``, ``files`` and ``links()`` in the order to create.

    ``max_path_bytes``: the longest relative path that still fits PATH_MAX below dest, since
    everything after the unpacking (layout, manifest, the UI) opens files by full path."""

    def __init__(self, max_path_bytes: int = 4095) -> None:
        self.max_path_bytes = max_path_bytes
        # Keyed by path parts, not PurePosixPath: hashing those is the cost of a big archive.
        self._kinds: dict[tuple[str, ...], Kind] = {}
        self._raw_links: list[tuple[PurePosixPath, str, bool]] = []
        self._dir_count = 0
        self.files: list[PurePosixPath] = []
        self.bytes = 0

    @property
    def dirs(self) -> list[PurePosixPath]:
        """Every directory, named or implied by a member under it; parents first."""
        return [PurePosixPath(*p) for p, k in sorted(self._kinds.items()) if k is Kind.DIR]

    @property
    def file_count(self) -> int:
        return len(self.files) + len(self._raw_links)

    @property
    def dir_count(self) -> int:
        # Implied directories count too: 'a/a/a/.../f' is an inode bomb with one header.
        # Kept as a running count: this is read after every member.
        return self._dir_count

    def add_dir(self, rel: PurePosixPath) -> None:
        self._add(rel, Kind.DIR)

    def add_file(self, rel: PurePosixPath, size: int) -> None:
        self._add(rel, Kind.FILE)
        self.files.append(rel)
        self.bytes += size

    def add_link(self, rel: PurePosixPath, target: str, *, hard: bool) -> None:
        self._add(rel, Kind.HARDLINK if hard else Kind.SYMLINK)
        self._raw_links.append((rel, target, hard))

    def _add(self, rel: PurePosixPath, kind: Kind) -> None:
        parts = rel.parts
        if len(parts) > MAX_DEPTH:
            raise UnsafeArchive(
                f"archive entry '{shown(rel)}' is {len(parts)} levels deep,"
                f" over the limit of {MAX_DEPTH}"
            )
        size = len(os.fsencode(str(rel)))
        if size > self.max_path_bytes:
            raise UnsafeArchive(
                f"archive entry '{shown(rel)}' has a {size}-byte path, longer than the"
                f" {self.max_path_bytes} bytes that fit below the staging directory"
            )
        for depth in range(1, len(parts)):  # every parent, top first
            parent = parts[:depth]
            above = self._kinds.get(parent)
            if above is None:
                self._kinds[parent] = above = Kind.DIR
                self._dir_count += 1
            if above is not Kind.DIR:
                raise UnsafeArchive(
                    f"archive entry '{shown(rel)}' lies under '{shown('/'.join(parent))}',"
                    f" which is a {above.value}"
                )
        seen = self._kinds.get(parts)
        if seen is None:
            self._kinds[parts] = kind
            self._dir_count += kind is Kind.DIR
        elif not (seen is Kind.DIR and kind is Kind.DIR):
            # Tar replaces an earlier member by a later one: a link swapped for a file (or the
            # reverse) is how a write is steered through a link. No MLflow archive needs it.
            raise UnsafeArchive(
                f"archive holds '{shown(rel)}' more than once (a {seen.value}, then a {kind.value})"
            )

    def links(self) -> list[Link]:
        """Every link resolved against the whole archive; call after the last member."""
        return [self._resolve(rel, raw, hard) for rel, raw, hard in self._raw_links]

    def _resolve(self, rel: PurePosixPath, raw: str, hard: bool) -> Link:
        kind = Kind.HARDLINK.value if hard else Kind.SYMLINK.value

        def refuse(why: str) -> UnsafeArchive:
            return UnsafeArchive(
                f"archive entry '{shown(rel)}' is a {kind} to '{shown(raw)}', {why}"
            )

        if not raw or raw.startswith("/") or "\x00" in raw:
            raise refuse("outside the staging directory")
        # Symlinks are relative to their directory, hard links to the archive's root.
        stack: list[str] = [] if hard else list(rel.parent.parts)
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        for i, part in enumerate(parts):
            if part == "..":
                if not stack:
                    raise refuse("outside the staging directory")
                stack.pop()
                continue
            stack.append(part)
            here = "/".join(stack)
            seen = self._kinds.get(tuple(stack))
            if seen is None:
                raise refuse(f"which the archive does not hold ('{shown(here)}' is missing)")
            # Every step but the last must be a plain directory: 'link/..' is not where
            # it looks on disk (the trick behind CVE-2025-4517).
            if i < len(parts) - 1 and seen is not Kind.DIR:
                raise refuse(
                    f"through '{shown(here)}', a {seen.value}; only plain directories may lead"
                )
        seen = self._kinds[tuple(stack)] if stack else Kind.DIR  # an empty stack is the root
        if seen is not Kind.FILE:
            raise refuse(f"a {seen.value}; only links to regular files of the archive are kept")
        return Link(rel, PurePosixPath(*stack), hard)
