"""Unpack a zip archive by hand: zipfile has no extraction filter and ignores unix links.

The same plan and writer as for tar: directories, then regular files through O_NOFOLLOW
descriptors, then links to regular files, last.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from idds_vis.domain.errors import LimitExceeded, StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.errors import NotAnArchive
from idds_vis.staging.member_plan import Plan
from idds_vis.staging.paths import entry_path, is_reserved, path_room
from idds_vis.staging.safe_write import SafeTree, build

_CHUNK = 1 << 20
_MAX_LINK_TARGET = 4096
# A central directory entry: 46 fixed bytes, then a name, an extra field and a comment.
_ENTRY = 46
_ENTRY_SIGNATURE = b"PK\x01\x02"
# Bytes of central directory per allowed entry: a real entry is 46 bytes, a name and a few
# extra fields (zip64, unix times), far below this.
_DIRECTORY_BYTES_PER_ENTRY = 1024
# The zip64 end record and its locator, which sit between the directory and the end record.
_ZIP64_END = b"PK\x06\x06"
_ZIP64_END_BYTES = struct.calcsize("<4sQ2H2L4Q") + struct.calcsize("<4sLQL")


def check_directory(archive: Path, max_entries: int) -> None:
    """Refuse a central directory too big to read, before ``ZipFile`` reads it: it reads the
    whole directory into memory and makes a ZipInfo of every entry (a 2 GiB download holds
    40 million) before a single one can be checked. Entries are counted the way ZipFile walks
    them (the count in the end record is not what it uses); anything malformed is left for
    ZipFile to report."""
    # zipfile's own reader of the end record (zip64 included); no public name for it.
    end_record: Any = zipfile._EndRecData  # type: ignore[attr-defined]
    with open(archive, "rb") as fp:
        endrec = end_record(fp)
        if not endrec:
            return
        size, location = endrec[5], endrec[9]  # _ECD_SIZE, _ECD_LOCATION
        if size > max_entries * _DIRECTORY_BYTES_PER_ENTRY:
            raise LimitExceeded(
                f"archive has a {size}-byte central directory, over the"
                f" {max_entries * _DIRECTORY_BYTES_PER_ENTRY} bytes its {max_entries} entries"
                " may take"
            )
        start = location - size  # where ZipFile looks for it, data prepended or not
        if endrec[0] == _ZIP64_END:
            start -= _ZIP64_END_BYTES
        if start < 0:
            return
        fp.seek(start)
        total = count = 0
        while total < size:
            head = fp.read(_ENTRY)
            if len(head) != _ENTRY or head[:4] != _ENTRY_SIGNATURE:
                return
            rest = sum(struct.unpack("<3H", head[28:34]))
            total += _ENTRY + rest
            count += 1
            if count > max_entries:
                raise LimitExceeded(
                    f"archive has more than {max_entries} entries (files, directories, links,"
                    " repeated or skipped names), over the cap"
                )
            fp.seek(rest, 1)


def _unix_type(info: zipfile.ZipInfo) -> int:
    return stat.S_IFMT(info.external_attr >> 16)


def _link_text(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: PurePosixPath) -> str:
    with zf.open(info) as data:
        # Read at most one byte past the limit: the declared size may lie.
        raw = data.read(_MAX_LINK_TARGET + 1)
    if len(raw) > _MAX_LINK_TARGET:
        raise UnsafeArchive(f"archive entry '{rel}' is a symlink with an oversized target")
    return raw.decode("utf-8", "surrogateescape")


def _plan(
    zf: zipfile.ZipFile, dest: Path, budget: Budget
) -> tuple[Plan, dict[PurePosixPath, zipfile.ZipInfo]]:
    """Every entry checked before anything is written, so a bad entry costs no cleanup."""
    plan = Plan(path_room(dest))
    regular: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        budget.check_stop()
        rel = entry_path(info.filename)
        if rel is None or is_reserved(rel):
            continue
        kind = _unix_type(info)
        if info.flag_bits & 0x1:
            raise NotAnArchive(f"archive entry '{rel}' is encrypted")
        if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise UnsafeArchive(f"archive entry '{rel}' is a device or fifo, not a data file")
        if info.is_dir() or kind == stat.S_IFDIR:
            plan.add_dir(rel)
        elif kind == stat.S_IFLNK:
            plan.add_link(rel, _link_text(zf, info, rel), hard=False)
        else:
            plan.add_file(rel, info.file_size)
            regular[rel] = info
        budget.check_declared(plan.file_count, plan.dir_count, plan.bytes)
    return plan, regular


def _write(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    tree: SafeTree,
    rel: PurePosixPath,
    budget: Budget,
) -> None:
    mode = 0o755 if (info.external_attr >> 16) & 0o100 else 0o644
    with zf.open(info) as data, tree.create(rel, mode) as out:
        while chunk := data.read(_CHUNK):
            # Counted as written, not as declared: the central directory may lie.
            budget.add_bytes(len(chunk))
            out.write(chunk)


def extract_zip(archive: Path, dest: Path, budget: Budget) -> None:
    try:
        check_directory(archive, budget.caps.max_entries)
        with zipfile.ZipFile(archive) as zf:
            plan, regular = _plan(zf, dest, budget)

            def write(tree: SafeTree, rel: PurePosixPath) -> None:
                _write(zf, regular[rel], tree, rel, budget)

            build(dest, plan, budget, write)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise NotAnArchive(f"archive is corrupt or uses an unsupported format: {exc}") from exc
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(f"could not unpack archive: {exc.strerror or exc}") from exc
