"""Create files, directories and links under one root without ever following a link.

Every path is walked component by component from a descriptor of the root, each directory
opened with O_NOFOLLOW|O_DIRECTORY and each file created with O_NOFOLLOW|O_EXCL relative to
its parent's descriptor. A link anywhere on the way is an error, never a detour, whatever
the interpreter's tarfile or os.path.realpath would make of it. The member plan already
refuses such archives; this is the second net, and it needs nothing from the archive.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from idds_vis.domain.errors import UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.member_plan import Link, Plan
from idds_vis.staging.paths import shown

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What the kernel says when a path component is a link (O_NOFOLLOW) or not a directory.
_DETOUR = (errno.ELOOP, errno.ENOTDIR)


class SafeTree:
    """Writes under ``root``, an existing directory this process created."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_fd = os.open(root, _DIR)

    def __enter__(self) -> SafeTree:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        os.close(self._root_fd)

    def _open_dir(
        self, rel: PurePosixPath, *, create: bool, member: PurePosixPath | None = None
    ) -> int:
        """A new descriptor of directory ``rel``, made (0700) where missing if ``create``;
        ``member`` is what the reason names (rel itself by default)."""
        fd = os.dup(self._root_fd)
        try:
            for i, part in enumerate(rel.parts):
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    child = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in _DETOUR:
                        here = PurePosixPath(*rel.parts[: i + 1])
                        raise UnsafeArchive(
                            f"archive entry '{shown(member or rel)}' would be written"
                            f" through '{shown(here)}',"
                            " which is not a plain directory"
                        ) from exc
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def exists(self, rel: PurePosixPath) -> bool:
        """Whether anything (a link too) is at ``rel``; its parents must be plain directories."""
        try:
            parent = self._open_dir(rel.parent, create=False)
        except FileNotFoundError:
            return False
        try:
            os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(parent)
        return True

    def mkdir(self, rel: PurePosixPath) -> None:
        os.close(self._open_dir(rel, create=True))

    def create(self, rel: PurePosixPath, mode: int) -> BinaryIO:
        """A new regular file, open for writing; refused if anything is there already."""
        parent = self._open_dir(rel.parent, create=True, member=rel)
        try:
            fd = os.open(rel.name, _CREATE, mode, dir_fd=parent)
        except FileExistsError as exc:
            raise UnsafeArchive(f"archive entry '{shown(rel)}' is already there") from exc
        finally:
            os.close(parent)
        return os.fdopen(fd, "wb")

    def _identity(self, rel: PurePosixPath) -> tuple[int, int]:
        """(device, inode) of the regular file at ``rel``, reached without following links."""
        parent = self._open_dir(rel.parent, create=False, member=rel)
        try:
            st = os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeArchive(f"archive entry '{shown(rel)}' is not a regular file on disk")
        return st.st_dev, st.st_ino

    def link(self, link: Link) -> None:
        """Create one link (after every file and directory), then check it on disk."""
        target = self._identity(link.target)
        parent = self._open_dir(link.rel.parent, create=True, member=link.rel)
        try:
            if link.hard:
                source = self._open_dir(link.target.parent, create=False, member=link.rel)
                try:
                    os.link(
                        link.target.name,
                        link.rel.name,
                        src_dir_fd=source,
                        dst_dir_fd=parent,
                        follow_symlinks=False,
                    )
                finally:
                    os.close(source)
            else:
                os.symlink(link.text, link.rel.name, dir_fd=parent)
            # What the kernel reaches through the new link must be the file the plan meant.
            st = os.stat(link.rel.name, dir_fd=parent, follow_symlinks=True)
        except FileExistsError as exc:
            raise UnsafeArchive(f"archive entry '{shown(link.rel)}' is already there") from exc
        finally:
            os.close(parent)
        if (st.st_dev, st.st_ino) != target or not self._resolves_inside(link):
            raise UnsafeArchive(
                f"archive entry '{shown(link.rel)}' does not lead to '{shown(link.target)}' on disk"
            )

    def _resolves_inside(self, link: Link) -> bool:
        """The same check by name: strict realpath, so a path it cannot resolve fails."""
        try:
            real = os.path.realpath(self.root / link.rel, strict=True)
            root = os.path.realpath(self.root, strict=True)
        except OSError:
            return False
        # A hard link is its own name; a symlink's name resolves to its target.
        expected = link.rel if link.hard else link.target
        return real == os.path.join(root, *expected.parts)


def build(
    dest: Path, plan: Plan, budget: Budget, write: Callable[[SafeTree, PurePosixPath], None]
) -> None:
    """Create what ``plan`` holds under dest: directories, then each regular file by ``write``,
    then links, last, so that nothing is ever written through one."""
    links = plan.links()
    with SafeTree(dest) as tree:
        for rel in plan.dirs:
            budget.add_dir()
            tree.mkdir(rel)
        for rel in plan.files:
            budget.add_file()
            write(tree, rel)
        for link in links:
            budget.add_file()
            tree.link(link)
