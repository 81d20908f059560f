"""A stand-in for the MLflow UI, FOR TESTS AND BENCHMARKS ONLY (setting ``ui_stub: true``).

The local deployer starts ``python -m idds_vis.ui.stub`` instead of ``idds-vis serve-ui`` with
the same arguments and environment (so finding, adopting and stopping UIs works unchanged). It
answers exactly what readiness checks (idds_vis/deploy/probe.py): ``<prefix>/health``, the UI
page under the prefix naming one script asset, that asset, and the ajax-api experiment search
listing the staged experiments. It shows no data and serves nobody: it exists so that hundreds
of UIs fit on a small machine (about 10 MB and 0.1 s each, against MLflow's ~250 MB and ~7 s)
and figures measure the agents rather than MLflow's start-up. Standard library only.

With ``IDDS_VIS_STUB_JOURNAL`` set, it appends one JSON line per event (``listening``,
``stopped``, and for a pool member ``handed``) with its instance name, pid and times, for tests
to count the UIs ever started.

With ``--pool-member`` it stands in for a warm pool member (``ui/pool_member.py``): it listens
with no data, answers 503, and takes exactly one authenticated hand-over (``ui/handover.py``)
of a staged directory and prefix, which it then serves as above.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from idds_vis.domain.naming import PREFIX_ENV, PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.ui.handover import (
    HANDOVER_PATH,
    MAX_BODY,
    SECRET_ENV,
    SECRET_HEADER,
    STATE_PATH,
    Handover,
    Refused,
)
from idds_vis.ui.listen import inherited_socket

# idds_vis.staging.info.STAGED_INFO (a test checks they agree); not imported, because that
# package imports aiohttp and more, which would triple this process's memory.
STAGED_INFO = ".idds-vis/staged.json"
ASSET = "static-files/stub.js"
SEARCH = "/ajax-api/2.0/mlflow/experiments/search"


def _journal(event: str, **fields: Any) -> None:
    path = os.environ.get("IDDS_VIS_STUB_JOURNAL")
    if not path:
        return
    line = {"event": event, "name": os.environ.get("IDDS_VIS_UI_NAME"), "pid": os.getpid(),
            "t": time.time(), **fields}  # fmt: skip
    # One short O_APPEND write per line: lines from many processes do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


class Served:
    """What the stand-in serves: set at start, or by the hand-over of a pool member."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.listing = b""

    def assign(self, prefix: str, experiments: list[str]) -> None:
        found = [
            {"experiment_id": str(i), "name": name, "lifecycle_stage": "active"}
            for i, name in enumerate(experiments)
        ]
        self.listing = json.dumps({"experiments": found}).encode()
        self.prefix = prefix


def make_handler(
    prefix: str | None, experiments: list[str], handover: Handover | None = None
) -> type[BaseHTTPRequestHandler]:
    page = f'<!doctype html><title>stand-in UI</title><script src="{ASSET}"></script>'.encode()
    served = Served()
    if prefix is not None:
        served.assign(prefix, experiments)

    # As serve-ui's proxy guard (ui/proxy_guard.py): with a secret, only the proxy is answered.
    secret = os.environ.pop(PROXY_SECRET_ENV, None)

    class Handler(BaseHTTPRequestHandler):
        def _control(self, body: bytes) -> bool:
            """A pool member's control paths; True when this request was one."""
            path = self.path.split("?", 1)[0]
            if handover is None or path not in (HANDOVER_PATH, STATE_PATH):
                return False
            sent = [v.encode() for v in self.headers.get_all(SECRET_HEADER) or []]
            if not handover.authentic(sent):
                self._send(403, b"not the agent\n", "text/plain")
            elif path == STATE_PATH:
                state = "serving" if served.prefix else "idle"
                self._send(200, json.dumps({"state": state}).encode(), "application/json")
            elif self.command != "POST":
                self._send(405, b"POST only\n", "text/plain")
            else:
                try:
                    assignment = handover.accept(body)
                    info = json.loads((assignment.staged / STAGED_INFO).read_text())
                except Refused as exc:
                    self._send(exc.status, f"{exc}\n".encode(), "text/plain")
                    return True
                except (OSError, ValueError) as exc:
                    self._send(422, f"{type(exc).__name__}\n".encode(), "text/plain")
                    return True
                served.assign(assignment.prefix.rstrip("/"), list(info["experiments"]))
                _journal("handed", prefix=assignment.prefix, staged=str(assignment.staged))
                self._send(200, b'{"state": "serving"}', "application/json")
            return True

        def _from_proxy(self) -> bool:
            sent = self.headers.get_all(PROXY_HEADER) or []
            if secret is None or (len(sent) == 1 and hmac.compare_digest(sent[0], secret)):
                return True
            self._send(403, b"this UI answers only through the idds-vis web app\n", "text/plain")
            return False

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self._control(b""):
                return
            if served.prefix is None:
                self._send(503, b"this UI has not been given a task yet\n", "text/plain")
                return
            if not self._from_proxy():
                return
            prefix = served.prefix
            path = self.path.split("?", 1)[0]
            if path == f"{prefix}/health":
                self._send(200, b"OK", "text/plain")
            elif path in (prefix, f"{prefix}/"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == f"{prefix}/{ASSET}":
                self._send(200, b"/* stand-in */\n", "text/javascript")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY + 1))
            if self._control(body):
                return
            if served.prefix is None:
                self._send(503, b"this UI has not been given a task yet\n", "text/plain")
                return
            if not self._from_proxy():
                return
            if self.path.split("?", 1)[0] == f"{served.prefix}{SEARCH}":
                self._send(200, served.listing, "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: hundreds of these run at once."""

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idds_vis.ui.stub", description=__doc__)
    parser.add_argument("--staged", type=Path)
    parser.add_argument("--prefix", default=os.environ.get(PREFIX_ENV))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    # Accepted for the same command line as serve-ui; a stand-in checks no Host or Origin.
    parser.add_argument("--allowed-host", action="append", default=[])
    parser.add_argument("--cors-origin", action="append", default=[])
    # A warm pool member's (ui/pool_member.py's command line).
    parser.add_argument("--pool-member", action="store_true")
    parser.add_argument("--instances", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.pool_member:
        if args.instances is None:
            parser.error("--pool-member needs --instances")
        handover = Handover(os.environ.pop(SECRET_ENV, ""), args.instances)
        handler = make_handler(None, [], handover)
    else:
        if args.staged is None or args.prefix is None:
            parser.error("--staged and --prefix are required")
        info = json.loads((args.staged / STAGED_INFO).read_text())
        handler = make_handler(args.prefix.rstrip("/"), list(info["experiments"]))
    sock = inherited_socket()  # the agent's listening socket, as uvicorn_server takes it
    server = HTTPServer((args.host, args.port), handler, bind_and_activate=sock is None)
    if sock is not None:
        server.socket.close()
        server.socket = sock

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        _journal("listening")
        server.serve_forever()
    finally:
        server.server_close()
        _journal("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
