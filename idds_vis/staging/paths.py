"""Name and link checks shared by every way of filling a staging directory."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from idds_vis.domain.errors import UnsafeArchive

# Our own bookkeeping lives here; data from the source must never shadow it.
RESERVED = ".idds-vis"


def shown(name: PurePosixPath | str) -> str:
    """A name for a one-line reason: control characters escaped (a newline in a member name
    must not forge a second line), long hostile names cut in the middle."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def entry_path(name: str) -> PurePosixPath | None:
    """The entry's path relative to dest, or None for the root itself; refuses escapes.

    Stricter than tarfile's 'data' filter on purpose: that filter strips a leading '/'
    and accepts 'a/../b', where a legitimate MLflow archive never has either.
    """
    if "\x00" in name:
        raise UnsafeArchive(f"archive entry {shown(name)!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise UnsafeArchive(f"archive entry '{shown(name)}' has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise UnsafeArchive(f"archive entry '{shown(name)}' leaves the staging directory")
    return PurePosixPath(*parts) if parts else None


def is_reserved(rel: PurePosixPath) -> bool:
    return rel.parts[0] == RESERVED


def path_room(root: Path) -> int:
    """How many bytes a relative path below root may have and still fit PATH_MAX."""
    return int(os.pathconf(root, "PC_PATH_MAX")) - len(os.fsencode(os.path.abspath(root))) - 2


def is_within(root: Path, path: Path) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return os.path.commonpath([real_root, real]) == real_root


def verify_links(root: Path) -> None:
    """After writing: every symlink under root must still resolve inside root."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink() and not is_within(root, path):
                rel = path.relative_to(root)
                raise UnsafeArchive(
                    f"archive entry '{rel}' is a symlink to '{os.readlink(path)}',"
                    " outside the staging directory"
                )


def clear_directory(root: Path) -> None:
    """Remove everything under root; rmtree unlinks symlinks rather than following them."""
    if root.is_symlink() or not root.is_dir():
        return
    # A tree made read-only for a UI cannot be emptied until its directories are writable.
    for dirpath, dirnames, _files in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o700)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
