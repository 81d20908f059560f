"""Unpack a tar archive member by member, after checking every header as a whole.

Not ``extractall``: tarfile writes members in archive order, so a later member goes through
an earlier link, and its 'data' filter is missing from Debian's 3.11.2 and defeated on
3.11.7 by a link chain longer than PATH_MAX (CVE-2025-4517). Here directories come first,
then regular files through O_NOFOLLOW descriptors, then links to regular files, last.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.errors import NotAnArchive
from idds_vis.staging.member_plan import Plan
from idds_vis.staging.paths import entry_path, is_reserved, path_room
from idds_vis.staging.safe_write import SafeTree, build
from idds_vis.staging.tar_headers import open_checked

_CORRUPT = (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, lzma.LZMAError)
_CHUNK = 1 << 20


def _plan(
    tar: tarfile.TarFile, dest: Path, budget: Budget
) -> tuple[Plan, dict[PurePosixPath, tarfile.TarInfo]]:
    """Every header checked before anything is written, so a bad entry costs no cleanup."""
    plan = Plan(path_room(dest))
    regular: dict[PurePosixPath, tarfile.TarInfo] = {}
    for member in tar:
        budget.check_stop()
        rel = entry_path(member.name)
        if rel is None or is_reserved(rel):
            continue
        if member.isdir():
            plan.add_dir(rel)
        elif member.isreg():
            plan.add_file(rel, member.size)
            regular[rel] = member
        elif member.issym() or member.islnk():
            plan.add_link(rel, member.linkname, hard=member.islnk())
        elif member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"archive entry '{rel}' is a device or fifo, not a data file")
        else:
            raise UnsafeArchive(f"archive entry '{rel}' has an unsupported type")
        budget.check_declared(plan.file_count, plan.dir_count, plan.bytes)
    return plan, regular


def _write(
    tar: tarfile.TarFile,
    rel: PurePosixPath,
    member: tarfile.TarInfo,
    tree: SafeTree,
    budget: Budget,
) -> None:
    data = tar.extractfile(member)
    if data is None:  # isreg() members always have data; tarfile's type says Optional
        raise NotAnArchive(f"archive entry '{rel}' has no data")
    # Only the owner's execute bit is kept, as the 'data' filter does: no setuid, no 0777.
    mode = 0o755 if member.mode & 0o100 else 0o644
    with data, tree.create(rel, mode) as out:
        while chunk := data.read(_CHUNK):
            # Counted as written: a header cannot understate what lands on disk.
            budget.add_bytes(len(chunk))
            out.write(chunk)


def extract_tar(archive: Path, dest: Path, budget: Budget) -> None:
    try:
        with open_checked(str(archive), budget.caps.max_entries) as tar:
            plan, regular = _plan(tar, dest, budget)
            build(
                dest, plan, budget, lambda tree, rel: _write(tar, rel, regular[rel], tree, budget)
            )
    except _CORRUPT as exc:
        raise NotAnArchive(f"archive is corrupt or truncated: {exc}") from exc
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(f"could not unpack archive: {exc.strerror or exc}") from exc
