"""Tar headers read under limits, before tarfile spends memory or CPU on them.

tarfile reads a GNU long name or a pax header whole into memory, however large its declared
size (a gzip'd archive carries a 1 GiB one in 1 MiB), keeps global pax records and copies them
into every later member, builds sparse maps of any length, and on Python before 3.11.10 parses
pax records with regular expressions that take quadratic time on crafted input
(CVE-2024-6232: a 64 KiB header costs seconds, 1 MiB a quarter of an hour). None of these
is needed by an MLflow archive. ``CheckedTarFile`` refuses them before tarfile acts, with a
one-line reason, and counts every header (members, links, directories named twice, entries
we skip) so that a stream of millions of tiny headers stops at the cap.

It reaches into tarfile's ``_proc_*`` hooks, the documented way (``TarFile.tarinfo``) to
change how headers are read; the same names exist from 3.8 to 3.13.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from typing import Any

from idds_vis.domain.errors import LimitExceeded, UnsafeArchive
from idds_vis.staging.paths import shown

# Larger than any real pax or long-name header (a 4 KiB path and a few times, uids, xattrs).
MAX_EXTENSION_BYTES = 16 * 1024
# Global pax records are copied into every member: a few (git archive writes one) are fine.
MAX_GLOBAL_RECORDS = 64
# A run of digits costs quadratic time in the hdrcharset search of 3.11 < 3.11.10 tarfile;
# no real value (a time, a size, a uid) comes near it.
MAX_DIGIT_RUN = 64
_EXTENSION_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def check_pax_records(data: bytes) -> str | None:
    """Why a pax header's records are malformed, or None.

    Each record is ``<length> <keyword>=<value>\\n`` and the records tile the header exactly;
    with that checked, tarfile's own record loop stops at each record's ``=`` (linear)."""
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            return "a pax record without its length"
        length = int(digits)
        stop = pos + length
        if stop > end or stop <= space + 1 or data[stop - 1] != 0x0A:
            return "a pax record whose length is wrong"
        if data.find(b"=", space + 1, stop) < 0:
            return "a pax record without a keyword"
        pos = stop
    run = 0
    for byte in data:  # linear; headers are at most MAX_EXTENSION_BYTES
        run = run + 1 if 0x30 <= byte <= 0x39 else 0
        if run > MAX_DIGIT_RUN:
            return f"a pax value with more than {MAX_DIGIT_RUN} digits in a row"
    return None


class _Replay:
    """``TarFile.fileobj`` for exactly one read: the header bytes already read and checked.
    It puts the real file object back on that read, so what follows reads the archive."""

    def __init__(self, tar: Any, data: bytes) -> None:
        self._tar = tar
        self._inner = tar.fileobj
        self._data = data

    def read(self, _size: int = -1) -> bytes:
        self._tar.fileobj = self._inner
        return self._data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CheckedTarInfo(tarfile.TarInfo):
    # tarfile's hooks; their argument (the TarFile) is untyped there.
    def _proc_member(self, tar: Any) -> Any:
        tar.count_header(extension=self.type in _EXTENSION_TYPES)
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchive(f"archive entry '{shown(self.name)}' is a sparse file")
        if self.type in _EXTENSION_TYPES and self.size > MAX_EXTENSION_BYTES:
            raise UnsafeArchive(
                f"archive has a {self.size}-byte extended header (a pax header or GNU long"
                f" name), over the limit of {MAX_EXTENSION_BYTES} bytes"
            )
        return super()._proc_member(tar)  # type: ignore[misc]

    def _proc_pax(self, tar: Any) -> Any:
        data = tar.fileobj.read(self._block(self.size))  # type: ignore[attr-defined]
        why = check_pax_records(data[: self.size])
        if why is not None:
            raise UnsafeArchive(f"archive has a malformed pax header: {why}")
        tar.fileobj = _Replay(tar, data)
        try:
            result = super()._proc_pax(tar)  # type: ignore[misc]
        finally:
            if isinstance(tar.fileobj, _Replay):  # a short header: never read back
                tar.fileobj = tar.fileobj._inner
        if len(tar.pax_headers) > MAX_GLOBAL_RECORDS:
            raise UnsafeArchive(f"archive has more than {MAX_GLOBAL_RECORDS} global pax records")
        return result

    # Sparse members in every encoding (old GNU, pax 0.0, 0.1 and 1.0): their maps are read
    # unbounded, and no MLflow store has one.
    def _proc_sparse(self, *_args: Any) -> Any:
        raise UnsafeArchive(f"archive entry '{shown(self.name)}' is a sparse file")

    def _proc_gnusparse_00(self, *_args: Any) -> Any:
        raise UnsafeArchive("archive holds a sparse file")

    def _proc_gnusparse_01(self, *_args: Any) -> Any:
        raise UnsafeArchive("archive holds a sparse file")

    def _proc_gnusparse_10(self, *_args: Any) -> Any:
        raise UnsafeArchive("archive holds a sparse file")


class CheckedTarFile(tarfile.TarFile):
    """A TarFile reading headers through ``CheckedTarInfo``: at most ``max_headers`` members
    (whether or not they create anything) and twice as many extended headers (some writers,
    Debian's 3.11 tarfile among them, put a pax header before every member; GNU tar may put
    a long name and a long link)."""

    tarinfo = CheckedTarInfo

    def __init__(self, *args: Any, max_headers: int, **kwargs: Any) -> None:
        self.max_headers = max_headers
        self.members_read = 0
        self.extensions_read = 0
        super().__init__(*args, **kwargs)

    def count_header(self, *, extension: bool) -> None:
        if extension:
            self.extensions_read += 1
            if self.extensions_read > 2 * self.max_headers:
                raise LimitExceeded(
                    f"archive has more than {2 * self.max_headers} extended headers, over the cap"
                )
            return
        self.members_read += 1
        if self.members_read > self.max_headers:
            raise LimitExceeded(
                f"archive has more than {self.max_headers} entries (files, directories,"
                " links, repeated or skipped names), over the cap"
            )


def open_checked(path: str, max_headers: int) -> CheckedTarFile:
    """``tarfile.open(path, "r:*")`` with every header checked as above."""
    # TarFile.open passes extra keywords on to the constructor; typeshed does not list them.
    opener: Any = CheckedTarFile.open
    tar: CheckedTarFile = opener(path, "r:*", max_headers=max_headers)
    return tar


def is_tar(path: str, max_headers: int) -> bool:
    """``tarfile.is_tarfile`` without its unbounded read of a first extended header: an
    archive refused here is still a tar (unpacking it then says why)."""
    try:
        with open_checked(path, max_headers):
            return True
    except (UnsafeArchive, LimitExceeded):
        return True
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return False
