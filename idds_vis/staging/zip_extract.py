"""Unpack a zip archive by hand: zipfile has no extraction filter and ignores unix links."""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.errors import NotAnArchive
from idds_vis.staging.paths import entry_path, is_reserved, is_within, link_target

_CHUNK = 1 << 20
_MAX_LINK_TARGET = 4096
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _unix_type(info: zipfile.ZipInfo) -> int:
    return stat.S_IFMT(info.external_attr >> 16)


def _checked(zf: zipfile.ZipFile, budget: Budget) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = zf.infolist()
    entries: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    files = dirs = size = 0
    for info in infos:
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
            dirs += 1
        else:
            # Two entries with one name unpack differently depending on the tool: refuse.
            if rel in seen:
                raise UnsafeArchive(f"archive holds entry '{rel}' more than once")
            seen.add(rel)
            files += 1
            size += info.file_size
        budget.check_declared(files, dirs, size)
        entries.append((info, rel))
    return entries


def _write_file(zf: zipfile.ZipInfo, src: zipfile.ZipFile, target: Path, budget: Budget) -> None:
    mode = 0o755 if (zf.external_attr >> 16) & 0o100 else 0o644
    fd = os.open(target, _CREATE, mode)
    with os.fdopen(fd, "wb") as out, src.open(zf) as data:
        while chunk := data.read(_CHUNK):
            # Counted as written, not as declared: the central directory may lie.
            budget.add_bytes(len(chunk))
            out.write(chunk)


def _link_text(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: PurePosixPath) -> str:
    if info.file_size > _MAX_LINK_TARGET:
        raise UnsafeArchive(f"archive entry '{rel}' is a symlink with an oversized target")
    return zf.read(info).decode("utf-8", "surrogateescape")


def extract_zip(archive: Path, dest: Path, budget: Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = _checked(zf, budget)
            links: list[tuple[PurePosixPath, str]] = []
            for info, rel in entries:
                budget.check_stop()
                target = dest / rel
                if info.is_dir() or _unix_type(info) == stat.S_IFDIR:
                    budget.add_dir()
                    target.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                budget.add_file()
                if _unix_type(info) == stat.S_IFLNK:
                    text = _link_text(zf, info, rel)
                    link_target(rel, text, hard=False)
                    links.append((rel, text))
                    continue
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _write_file(info, zf, target, budget)
            # Links last: no later entry can then be written through one of them.
            for rel, text in links:
                (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.symlink(text, dest / rel)
                if not is_within(dest, dest / rel):
                    raise UnsafeArchive(
                        f"archive entry '{rel}' is a symlink to '{text}',"
                        " outside the staging directory"
                    )
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise NotAnArchive(f"archive is corrupt or uses an unsupported format: {exc}") from exc
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(f"could not unpack archive: {exc}") from exc
