"""Unpack a tar archive after checking every header; tarfile's 'data' filter is a second net."""

from __future__ import annotations

import lzma
import tarfile
import zlib
from pathlib import Path

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.errors import NotAnArchive
from idds_vis.staging.paths import entry_path, is_reserved, link_target

_CORRUPT = (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, lzma.LZMAError)


def _checked_members(tar: tarfile.TarFile, budget: Budget) -> list[tarfile.TarInfo]:
    """Every header checked before anything is written, so a bad entry costs no cleanup."""
    members: list[tarfile.TarInfo] = []
    files = dirs = size = 0
    for member in tar:
        budget.check_stop()
        rel = entry_path(member.name)
        if rel is None or is_reserved(rel):
            continue
        if member.isdir():
            dirs += 1
        elif member.isreg():
            files += 1
            size += member.size
        elif member.issym() or member.islnk():
            link_target(rel, member.linkname, hard=member.islnk())
            files += 1
        elif member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"archive entry '{rel}' is a device or fifo, not a data file")
        else:
            raise UnsafeArchive(f"archive entry '{rel}' has an unsupported type")
        budget.check_declared(files, dirs, size)
        members.append(member)
    return members


def extract_tar(archive: Path, dest: Path, budget: Budget) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in _checked_members(tar, budget):
                if member.isdir():
                    budget.add_dir()
                else:
                    budget.add_file()
                    # tarfile copies exactly member.size bytes or fails, so this is exact.
                    budget.add_bytes(member.size if member.isreg() else 0)
                tar.extract(member, dest, set_attrs=True, filter="data")
    except tarfile.FilterError as exc:
        # Not str(exc): it spells out the agent's own directories.
        raise UnsafeArchive(
            f"archive entry '{exc.tarinfo.name}' leaves the staging directory"
            f" (refused by the tar data filter: {type(exc).__name__})"
        ) from exc
    except _CORRUPT as exc:
        raise NotAnArchive(f"archive is corrupt or truncated: {exc}") from exc
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(f"could not unpack archive: {exc}") from exc
