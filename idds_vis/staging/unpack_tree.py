"""Move a tree of downloaded files into dest, unpacking every tar or zip among them in place.

Grid outputs come as files, often one tarball per job (``..._000001.metrics.tgz``): each
archive becomes a directory named after it, holding its contents; other files are copied.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.tar_extract import extract_tar
from idds_vis.staging.zip_extract import extract_zip

_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")
_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def unpacked_name(name: str) -> str:
    """``x.metrics.tgz`` -> ``x.metrics``; a name without an archive suffix gets ``.d``."""
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name + ".d"


def _copy(src: Path, dst: Path, budget: Budget) -> None:
    with (
        open(src, "rb") as inp,
        os.fdopen(os.open(dst, _CREATE, 0o644), "wb") as out,
    ):
        while chunk := inp.read(_CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def unpack_tree(root: Path, dest: Path, budget: Budget) -> None:
    try:
        for path in sorted(root.rglob("*")):
            budget.check_stop()
            rel = path.relative_to(root)
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                budget.add_dir()
                (dest / rel).mkdir(mode=0o700, exist_ok=True)
            elif not stat.S_ISREG(mode):
                raise UnsafeArchive(f"downloaded '{rel}' is not a regular file")
            elif tarfile.is_tarfile(path) or zipfile.is_zipfile(path):
                target = dest / rel.parent / unpacked_name(rel.name)
                if target.exists():
                    raise UnsafeArchive(f"two downloaded files would unpack into '{target.name}'")
                budget.add_dir()
                target.mkdir(mode=0o700, parents=True)
                # Tar first: a tar whose last member is a zip also passes is_zipfile.
                if tarfile.is_tarfile(path):
                    extract_tar(path, target, budget)
                else:
                    extract_zip(path, target, budget)
            else:
                budget.add_file()
                (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _copy(path, dest / rel, budget)
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(
            f"could not move the downloaded files into place: {exc.strerror}"
        ) from exc
