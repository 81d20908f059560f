"""Red team, archives: headers that cost memory or CPU before any cap could count them.

Each archive here is small on the wire (a few KiB to a few MiB compressed) and was accepted,
or read whole into memory, before the fix:

- a stream of headers that create nothing new (the same directory again and again, entries
  under ``.idds-vis`` that are skipped) passed ``max_files`` uncounted, while tarfile keeps a
  TarInfo of each and zipfile a ZipInfo of each;
- a GNU long name or a pax header is read whole into memory whatever its declared size;
- a pax header with a long run of digits takes quadratic time in 3.11.7's tarfile
  (CVE-2024-6232, fixed in 3.11.10): 64 KiB cost 4 s, 1 MiB a quarter of an hour;
- global pax records are copied into every later member; sparse maps are read unbounded.

Memory is measured with tracemalloc (bytes allocated, not time), so nothing here is timing.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from idds_vis.domain.errors import LimitExceeded, StagingError, UnsafeArchive
from idds_vis.staging.caps import Budget, Caps
from idds_vis.staging.paths import RESERVED
from idds_vis.staging.tar_extract import extract_tar
from idds_vis.staging.tar_headers import MAX_EXTENSION_BYTES, is_tar
from idds_vis.staging.unpack_tree import unpack_tree
from idds_vis.staging.zip_extract import extract_zip

SMALL = Caps(max_bytes=1 << 20, max_files=5)
MIB = 1 << 20


def _header(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    body = b""
    for key, value in records.items():
        text = f" {key}={value}\n".encode()
        length = len(text) + 1
        while len(str(length)) + len(text) != length:
            length += 1
        body += str(length).encode() + text
    return _header("././@PaxHeader", kind, len(body)) + _padded(body)


def _tar_gz(tmp: Path, *blocks: bytes) -> Path:
    path = tmp / "a.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        for block in blocks:
            out.write(block)
        out.write(b"\0" * 1024)
    return path


def _dest(tmp: Path) -> Path:
    dest = tmp / "dest"
    dest.mkdir()
    return dest


def _peak(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak bytes allocated while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        raised: BaseException | None = None
    except BaseException as exc:  # returned to the test, which checks it
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


@pytest.mark.parametrize("name", ["d/", ".idds-vis/x"])
def test_tar_headers_that_create_nothing_still_count(tmp_path: Path, name: str) -> None:
    kind = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
    archive = _tar_gz(tmp_path, *[_header(name, kind) for _ in range(1000)])
    with pytest.raises(LimitExceeded, match="entries"):
        extract_tar(archive, _dest(tmp_path), Budget(SMALL, "archive"))


@pytest.mark.parametrize("name", ["d/", ".idds-vis/x"])
def test_zip_entries_that_create_nothing_still_count(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "a.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about a name used twice: the point here
        for _ in range(1000):
            zf.writestr(name, b"")
    with pytest.raises(LimitExceeded, match="entries"):
        extract_zip(archive, _dest(tmp_path), Budget(SMALL, "archive"))


def test_zip_central_directory_too_big_to_read(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            info = zipfile.ZipInfo(f"f{i}")
            info.comment = b"c" * 60000  # 60 KB of directory per entry
            zf.writestr(info, b"")
    with pytest.raises(LimitExceeded, match="central directory"):
        extract_zip(archive, _dest(tmp_path), Budget(SMALL, "archive"))


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_huge_extended_header_is_not_read_into_memory(tmp_path: Path, kind: bytes) -> None:
    size = 32 * MIB  # 32 KiB once gzip'd
    payload = b"a" * size if kind == tarfile.GNUTYPE_LONGNAME else b"%d path=" % size
    archive = _tar_gz(
        tmp_path,
        _header("././@LongLink", kind, size),
        _padded(payload.ljust(size, b"a")),
        _header("f"),
    )
    peak, raised = _peak(lambda: extract_tar(archive, _dest(tmp_path), Budget(Caps(), "a")))
    assert isinstance(raised, UnsafeArchive), raised
    assert "extended header" in str(raised)
    assert peak < 4 * MIB, f"{peak} bytes allocated to refuse it"
    # Recognising the file as a tar (the stager and unpack_tree ask first) reads no more.
    peak, raised = _peak(lambda: is_tar(str(archive), 100))
    assert raised is None
    assert peak < 4 * MIB, f"{peak} bytes allocated to recognise it"


def test_pax_digit_run_is_refused(tmp_path: Path) -> None:
    # Under the size limit, but quadratic in 3.11.7's hdrcharset search (0.26 s at 16 KiB;
    # 20000 members of it is more than an hour of one worker).
    value = "1" * (MAX_EXTENSION_BYTES - 100)
    archive = _tar_gz(tmp_path, _pax({"comment": value}), _header("f"))
    with pytest.raises(UnsafeArchive, match="digits in a row"):
        extract_tar(archive, _dest(tmp_path), Budget(Caps(), "archive"))


def test_pax_records_must_tile_the_header(tmp_path: Path) -> None:
    # Records without '=' make each regex match scan to the next one (quadratic).
    body = b"4 a\n" * 2000 + b"8 path=\n"
    archive = _tar_gz(tmp_path, _header("x", tarfile.XHDTYPE, len(body)), _padded(body))
    with pytest.raises(UnsafeArchive, match="malformed pax header"):
        extract_tar(archive, _dest(tmp_path), Budget(Caps(), "archive"))


def test_global_pax_records_are_bounded(tmp_path: Path) -> None:
    records = {f"k{i}": "v" for i in range(1000)}  # copied into every later member
    archive = _tar_gz(tmp_path, _pax(records, tarfile.XGLTYPE), _header("f"))
    with pytest.raises(UnsafeArchive, match="global pax records"):
        extract_tar(archive, _dest(tmp_path), Budget(Caps(), "archive"))


def test_git_archive_global_header_still_unpacks(tmp_path: Path) -> None:
    archive = _tar_gz(
        tmp_path, _pax({"comment": "0" * 40}, tarfile.XGLTYPE), _header("f", size=2), _padded(b"ok")
    )
    dest = _dest(tmp_path)
    extract_tar(archive, dest, Budget(Caps(), "archive"))
    assert (dest / "f").read_bytes() == b"ok"


def test_gnu_sparse_member_is_refused(tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path, _header("s", tarfile.GNUTYPE_SPARSE, 0))
    with pytest.raises(UnsafeArchive, match="sparse"):
        extract_tar(archive, _dest(tmp_path), Budget(Caps(), "archive"))


def test_pax_sparse_map_is_not_read(tmp_path: Path) -> None:
    # GNU sparse 1.0: the map's length comes first in the data; tarfile reads that many pairs.
    pairs = 2_000_000
    data = b"%d\n" % pairs + b"1\n" * (2 * pairs)
    records = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "s",
        "GNU.sparse.realsize": "1",
    }
    archive = _tar_gz(tmp_path, _pax(records), _header("s", size=len(data)), _padded(data))
    peak, raised = _peak(lambda: extract_tar(archive, _dest(tmp_path), Budget(Caps(), "a")))
    assert isinstance(raised, UnsafeArchive) and "sparse" in str(raised), raised
    assert peak < 4 * MIB, f"{peak} bytes allocated to refuse it"


def test_bad_archive_reasons_stay_one_line(tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path, _header("s\nforged line", tarfile.GNUTYPE_SPARSE, 0))
    with pytest.raises(StagingError) as caught:
        extract_tar(archive, _dest(tmp_path), Budget(Caps(), "archive"))
    assert "\n" not in str(caught.value)


# -- trees (S3 prefixes, Rucio datasets): our bookkeeping is not taken from the source --------


def _tree_with_planted_store(tmp_path: Path, as_archive: bool) -> Path:
    """A downloaded tree holding an ``.idds-vis`` of its own: a prepared-store marker and a
    store.db, as an S3 prefix's keys or as an archive named ``.idds-vis.tgz``."""
    tree = tmp_path / "tree"
    (tree / "mlruns" / "0").mkdir(parents=True)
    (tree / "mlruns" / "0" / "meta.yaml").write_text("experiment_id: '0'\nname: Default\n")
    planted = {"prepared.json": b'{"layout": "sqlite"}', "store.db": b"SQLite format 3\0"}
    if as_archive:
        with tarfile.open(tree / ".idds-vis.tgz", "w:gz") as tar:
            for name, data in planted.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (tree / ".idds-vis").mkdir()
        for name, data in planted.items():
            (tree / ".idds-vis" / name).write_bytes(data)
    return tree


@pytest.mark.parametrize("as_archive", [False, True], ids=["keys", "archive"])
def test_a_tree_cannot_plant_the_prepared_store(tmp_path: Path, as_archive: bool) -> None:
    """With ``.idds-vis/prepared.json`` in place, the UI's prepare_store took the source's own
    ``.idds-vis/store.db`` as already prepared: no guard check, no location rewrite."""
    tree = _tree_with_planted_store(tmp_path, as_archive)
    dest = _dest(tmp_path)
    unpack_tree(tree, dest, Budget(Caps(), "download"))
    assert (dest / "mlruns" / "0" / "meta.yaml").exists()
    assert not (dest / RESERVED).exists(), sorted(p.name for p in (dest / RESERVED).iterdir())
