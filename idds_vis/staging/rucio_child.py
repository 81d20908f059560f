"""The process that runs Rucio's own DownloadClient for one DID (``python -m`` this module).

A process of its own because the Rucio client keeps its configuration, token cache and
environment per process, logs request headers (passwords included) at debug level, and cannot
be stopped mid-transfer from a thread. The parent (``staging/rucio.py``) gives it a private
directory and a clean environment naming files in it, sends the secrets on stdin, watches the
download against the caps, and kills it on a cap, a deadline or a cancellation.

Request (JSON on stdin): work, did, max_bytes, max_files, rse, transfer_timeout, access{...}.
Result: ``result.json`` in the private directory (stdout is not ours: the client prints).
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import resource
import signal
import sys
from pathlib import Path, PurePosixPath
from typing import Any

RESULT = "result.json"
DOWNLOAD = "download"
CONFIG = "etc/rucio.cfg"
TOKEN = "etc/token"
PROXY = "etc/x509up"
CA = "etc/ca.pem"


class Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _private(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return str(path)


def write_config(work: Path, access: dict[str, Any]) -> None:
    """rucio.cfg and the files it names, from our settings only (RUCIO_CONFIG points here)."""
    (work / "etc").mkdir(mode=0o700)
    client = {
        "rucio_host": access["host"],
        "auth_host": access["auth_host"],
        "auth_type": access["auth_type"],
        "account": access["account"],
        "request_retries": "2",
    }
    if access.get("vo"):
        client["vo"] = access["vo"]
    if access["auth_type"] == "userpass":
        if not (access.get("username") and access.get("password")):
            raise Failure("auth", "Rucio auth_type userpass needs rucio_username and a password")
        client["username"] = access["username"]
        client["password"] = access["password"]
    elif access["auth_type"] == "oidc":
        if not access.get("token"):
            raise Failure("auth", "Rucio auth_type oidc needs a token file (rucio_token_file)")
        _private(work / TOKEN, access["token"])
    elif access["auth_type"] == "x509_proxy":
        if not access.get("x509_proxy"):
            raise Failure("auth", "Rucio auth_type x509_proxy needs rucio_x509_proxy_file")
        client["client_x509_proxy"] = _private(work / PROXY, access["x509_proxy"])
    if access.get("ca_cert"):
        client["ca_cert"] = _private(work / CA, access["ca_cert"])
    parser = configparser.ConfigParser(interpolation=None)
    # Rucio reads with interpolation on: a '%' in a value must be doubled.
    parser["client"] = {k: v.replace("%", "%%") for k, v in client.items()}
    fd = os.open(work / CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        parser.write(out)


def _check_listing(did: str, files: list[dict[str, Any]], max_bytes: int, max_files: int) -> None:
    """Refuse before any transfer: names that would leave the directory, or totals over a cap."""
    total = 0
    for f in files:
        name = str(f.get("name", ""))
        parts = PurePosixPath(name).parts
        if not name or "\x00" in name or name.startswith("/") or ".." in parts:
            raise Failure("unsafe", f"Rucio DID {did} lists a file named '{name}'")
        total += int(f.get("bytes") or 0)
    if len(files) > max_files:
        raise Failure(
            "limit", f"Rucio DID {did} holds {len(files)} files, over the cap of {max_files}"
        )
    if total > max_bytes:
        raise Failure(
            "limit", f"Rucio DID {did} holds {total} bytes, over the cap of {max_bytes} bytes"
        )


def _one_line(exc: BaseException) -> str:
    """Rucio's 'Summary.\nDetails: ServerClass: what the server said' as 'what the server said'."""
    text = " ".join(str(exc).split())
    _, found, details = text.partition("Details: ")
    if found:
        cls, colon, rest = details.partition(": ")
        text = rest if colon and " " not in cls else details
    return text or type(exc).__name__


def download(request: dict[str, Any], work: Path) -> dict[str, Any]:
    # rucio-clients ships no type information.
    from rucio.client import Client  # type: ignore[import-untyped]
    from rucio.client.downloadclient import DownloadClient  # type: ignore[import-untyped]
    from rucio.common import exception as rx  # type: ignore[import-untyped]

    did = request["did"]
    scope, name = did.split(":", 1)
    access = request["access"]
    try:
        client = Client()
        info = client.get_did(scope, name, dynamic_depth="FILE")
        if str(info.get("type", "")).upper() == "FILE":
            files = [{"name": name, "bytes": info.get("bytes")}]
        else:
            files = list(client.list_files(scope, name))
        if not files:
            raise Failure("not-found", f"Rucio DID {did} holds no files")
        _check_listing(did, files, request["max_bytes"], request["max_files"])
        item: dict[str, Any] = {
            "did": did,
            "base_dir": str(work / DOWNLOAD),
            # Archives are unpacked by our own checked code, never by the client's tar/unzip.
            "no_resolve_archives": True,
            "transfer_timeout": request["transfer_timeout"],
        }
        if request.get("rse"):
            item["rse"] = request["rse"]
        log = logging.getLogger("idds_vis.rucio_child")
        downloader = DownloadClient(client=client, logger=log, tracing=False)
        done = downloader.download_dids([item], num_threads=2)
    except Failure:
        raise
    except rx.DataIdentifierNotFound:
        raise Failure("not-found", f"no such Rucio DID {did}") from None
    except (rx.CannotAuthenticate, rx.NoAuthInformation) as exc:
        raise Failure(
            "auth",
            f"Rucio at {access['auth_host']} refused account {access['account']}: {_one_line(exc)}",
        ) from None
    except (rx.NoFilesDownloaded, rx.NotAllFilesDownloaded) as exc:
        raise Failure(
            "transfer", f"files of Rucio DID {did} could not be downloaded ({type(exc).__name__})"
        ) from None
    except (rx.ServerConnectionException, OSError) as exc:
        # requests' errors are OSErrors; a local file error is not a connection problem.
        if not type(exc).__module__.startswith(("requests", "urllib3", "rucio")):
            raise
        raise Failure(
            "unreachable", f"cannot connect to Rucio at {access['host']} ({type(exc).__name__})"
        ) from None
    except rx.RucioException as exc:
        raise Failure("error", f"Rucio failed for {did}: {_one_line(exc)}") from None
    return {"ok": True, "did_type": str(info.get("type", "")).upper(), "files": len(done)}


def main() -> int:
    request = json.load(sys.stdin)
    # No file this process writes may pass the byte cap: the kernel stops a replica bigger than
    # its catalogue entry at the cap (SIGXFSZ), however fast it arrives. The parent still
    # counts the total over all files.
    limit = int(request["max_bytes"]) + 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    # Python ignores SIGXFSZ (a write would fail with EFBIG, and the client would retry it).
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    work = Path(request["work"])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        write_config(work, request["access"])
        result = download(request, work)
    except Failure as f:
        result = {"ok": False, "kind": f.kind, "message": f.message}
    except Exception as exc:  # the parent turns this into a reason; a traceback helps nobody there
        message = f"Rucio download failed: {type(exc).__name__}: {_one_line(exc)}"
        result = {"ok": False, "kind": "error", "message": message}
    fd = os.open(work / (RESULT + ".part"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(result, out)
    os.rename(work / (RESULT + ".part"), work / RESULT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
