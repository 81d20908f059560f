"""Move a tree of downloaded files into dest, unpacking every tar or zip among them in place.

Grid outputs come as files, often one tarball per job (``..._000001.metrics.tgz``): each
archive becomes a directory named after it, holding its contents; other files are copied.
Everything is written through the same O_NOFOLLOW walk as archive members, so a link an
earlier archive left cannot steer a later copy.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from idds_vis.domain.errors import StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget
from idds_vis.staging.paths import is_reserved
from idds_vis.staging.safe_write import SafeTree
from idds_vis.staging.tar_extract import extract_tar
from idds_vis.staging.tar_headers import is_tar
from idds_vis.staging.zip_extract import extract_zip

_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")
_CHUNK = 1 << 20
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def unpacked_name(name: str) -> str:
    """``x.metrics.tgz`` -> ``x.metrics``; a name without an archive suffix gets ``.d``."""
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name + ".d"


def _copy(src: Path, tree: SafeTree, rel: PurePosixPath, budget: Budget) -> None:
    with os.fdopen(os.open(src, _READ), "rb") as inp, tree.create(rel, 0o644) as out:
        while chunk := inp.read(_CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def unpack_tree(root: Path, dest: Path, budget: Budget) -> None:
    try:
        with SafeTree(dest) as tree:
            for path in sorted(root.rglob("*")):
                budget.check_stop()
                rel = PurePosixPath(path.relative_to(root).as_posix())
                # Our bookkeeping (the prepared store and its marker, the manifest) is never
                # taken from the source: a planted .idds-vis/prepared.json made the UI serve
                # the source's own .idds-vis/store.db, unchecked and not rewritten.
                if is_reserved(rel):
                    continue
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    budget.add_dir()
                    tree.mkdir(rel)
                elif not stat.S_ISREG(mode):
                    raise UnsafeArchive(f"downloaded '{rel}' is not a regular file")
                elif (is_tarball := is_tar(str(path), budget.caps.max_entries)) or (
                    zipfile.is_zipfile(path)
                ):
                    target = rel.parent / unpacked_name(rel.name)
                    if is_reserved(target):  # '.idds-vis.tgz' would unpack into it
                        continue
                    if tree.exists(target):
                        raise UnsafeArchive(
                            f"two downloaded files would unpack into '{target.name}'"
                        )
                    budget.add_dir()
                    tree.mkdir(target)
                    # Tar first: a tar whose last member is a zip also passes is_zipfile.
                    if is_tarball:
                        extract_tar(path, dest / target, budget)
                    else:
                        extract_zip(path, dest / target, budget)
                else:
                    budget.add_file()
                    _copy(path, tree, rel, budget)
    except StagingError:
        raise
    except OSError as exc:
        raise StagingError(
            f"could not move the downloaded files into place: {exc.strerror}"
        ) from exc
