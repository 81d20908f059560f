"""Copy a local source directory into dest, with the same refusals and caps as an archive."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.paths import RESERVED, is_within

_CHUNK = 1 << 20
_READ = os.O_RDONLY | os.O_NOFOLLOW
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _scan(root: Path, budget: Budget) -> list[tuple[PurePosixPath, str]]:
    """List (relative path, kind) depth-first, refusing what an archive would be refused."""
    found: list[tuple[PurePosixPath, str]] = []
    files = dirs = size = 0
    pending = [PurePosixPath()]
    while pending:
        here = pending.pop()
        with os.scandir(root / here) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            budget.check_stop()
            rel = here / entry.name
            if rel.parts[0] == RESERVED:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if not is_within(root, root / rel):
                    raise UnsafeArchive(
                        f"symlink '{rel}' in the source directory points outside it"
                        f" (to '{os.readlink(root / rel)}')"
                    )
                found.append((rel, "link"))
                files += 1
            elif stat.S_ISDIR(st.st_mode):
                found.append((rel, "dir"))
                pending.append(rel)
                dirs += 1
            elif stat.S_ISREG(st.st_mode):
                found.append((rel, "file"))
                files += 1
                size += st.st_size
            else:
                raise UnsafeArchive(f"'{rel}' in the source directory is a device, fifo or socket")
            budget.check_declared(files, dirs, size)
    return found


def _copy_file(src: Path, dst: Path, budget: Budget) -> None:
    mode = 0o755 if os.stat(src, follow_symlinks=False).st_mode & 0o100 else 0o644
    with (
        os.fdopen(os.open(src, _READ), "rb") as inp,
        os.fdopen(os.open(dst, _CREATE, mode), "wb") as out,
    ):
        # Counted as copied: a file still growing in the source must not pass the cap.
        while chunk := inp.read(_CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def copy_directory(source: Path, dest: Path, budget: Budget) -> None:
    root = source.resolve(strict=True)
    if is_within(root, dest):
        raise StagingError(f"staging directory {dest} lies inside the source directory {root}")
    try:
        entries = _scan(root, budget)
        links: list[PurePosixPath] = []
        for rel, kind in sorted(entries):
            budget.check_stop()
            if kind == "dir":
                budget.add_dir()
                (dest / rel).mkdir(mode=0o700, parents=True, exist_ok=True)
            elif kind == "file":
                budget.add_file()
                (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _copy_file(root / rel, dest / rel, budget)
            else:
                budget.add_file()
                links.append(rel)
        for rel in links:
            # Re-aim each link relatively: an absolute target would point back at the source.
            real = os.path.realpath(root / rel)
            parent = os.path.realpath((root / rel).parent)
            (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.symlink(os.path.relpath(real, parent), dest / rel)
    except PermissionError as exc:
        raise StagingError(f"cannot read the source directory: {exc}") from exc
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(f"could not copy the source directory: {exc}") from exc
