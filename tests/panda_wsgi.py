"""The WSGI entry point of the test panda-server (runs inside panda-server's own venv, stdlib only).

In production panda-server runs under Apache httpd + mod_wsgi, which hands the application what
this shim supplies:

- ``SCRIPT_NAME`` = the whole request path: the application routes on it
  (``/api/v1/<module>/<method>``), as mod_wsgi's ``WSGIScriptAlias`` for each path sets it;
- no ``CONTENT_LENGTH`` rather than an empty one: the application does ``int(CONTENT_LENGTH)``.

It also serves the OpenID Connect discovery document and key set of the test identity provider
under ``/oidc/`` (files the fixture writes into ``$IDDS_VIS_PANDA_OIDC_DIR``), so the server
verifies the tests' signed tokens exactly as it verifies a real provider's: by fetching them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pandaserver.server.panda import application as panda_application  # type: ignore[import-not-found]

OIDC_PREFIX = "/oidc/"
_OIDC_DIR = Path(os.environ["IDDS_VIS_PANDA_OIDC_DIR"])

StartResponse = Callable[..., Any]


def _oidc_document(path: str, start_response: StartResponse) -> Iterable[bytes]:
    name = path[len(OIDC_PREFIX) :]
    target = _OIDC_DIR / name
    if "/" in name or not target.is_file():
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [target.read_bytes()]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path.startswith(OIDC_PREFIX):
        return _oidc_document(path, start_response)
    environ["SCRIPT_NAME"], environ["PATH_INFO"] = path, ""
    if not environ.get("CONTENT_LENGTH"):
        environ.pop("CONTENT_LENGTH", None)
    result: Iterable[bytes] = panda_application(environ, start_response)
    return result
