"""The one part of a Rucio download that tests replace: the storage protocol's ``get``.

Rucio's DownloadClient picks the protocol class named by the RSE's description (``impl``) and
calls ``protocol.get(pfn, temp_path)`` for the bytes of each file (rucio/client/
downloadclient.py ``_download_item``). Everything above that runs for real: configuration,
authentication, DID resolution, replica listing, destination layout, checksum verification.
Real grid storage (WebDAV with X.509, XRootD) cannot run here, so this class fetches the PFN's
path from the test's storage endpoint over plain HTTP on loopback instead.
"""

from __future__ import annotations

import shutil
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from rucio.common import exception  # type: ignore[import-untyped]
from rucio.rse.protocols.protocol import RSEProtocol  # type: ignore[import-untyped]

IMPL = "tests.rucio_transfer.LoopbackGet"


class LoopbackGet(RSEProtocol):  # type: ignore[misc]
    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get(self, pfn: str, dest: str, transfer_timeout: int | None = None) -> None:
        parts = urlsplit(pfn)
        url = f"http://{parts.netloc}{parts.path}"
        try:
            with urllib.request.urlopen(url, timeout=transfer_timeout or 60) as answer, \
                    open(dest, "wb") as out:  # fmt: skip
                shutil.copyfileobj(answer, out, 1 << 16)
        except OSError as exc:
            raise exception.ServiceUnavailable(str(exc)) from exc

    def put(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError

    def delete(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError

    def rename(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError
