"""Reads PanDA tasks through panda-client's HTTP layer, off the event loop (the PandaTasks port).

How panda-client is configured, and why not through its public functions (panda-client 2.2.0,
``pandaclient/Client.py``):

- Every public call (``getTaskParamsMap``, ``getJediTaskDetails``, ``get_files_in_datasets``...)
  builds its URL from the module global ``server_base_path_ssl``, computed once at import from
  ``$PANDA_URL_SSL``, and takes its authentication from the process environment at each call
  (``$PANDA_AUTH``, ``$PANDA_AUTH_VO``, ``$PANDA_AUTH_ID_TOKEN`` / ``$OIDC_AUTH_TOKEN_FILE``,
  ``$X509_USER_PROXY``, ``$PANDA_VERIFY_HOST``). Using them means setting process-wide state.
  Some of it goes wrong for a long-running service: with ``PANDA_AUTH=oidc`` and no token in the
  environment it starts an interactive device-code login and ``sys.exit``s when that fails; over
  https without ``$X509_CERT_DIR`` it runs a shell command and writes ``X509_CERT_DIR`` into
  ``os.environ``; without ``$PANDA_BEHIND_REAL_LB`` it replaces the host by a random reverse-DNS
  name of one of its addresses on every call.
- So each call here uses panda-client's transport, ``Client._HttpClient`` (httpx, the TLS
  context from a grid proxy, the bearer token and ``Origin`` headers, JSON decoding of
  ``{"__datetime__": ...}`` values), in a subclass whose settings come from ``PandaSettings``:
  the token is read from its file at each call (something else refreshes it), the host is used
  as given, the CA directory is explicit. The endpoint paths and parameters are those the public
  functions send; the ``{"success", "message", "data"}`` envelope is unwrapped here, because the
  public functions turn every failure into ``(255, None)`` and print the response to stdout.
- Importing ``pandaclient.Client`` resolves the PanDA cache server's name (``pandacache.cern.ch``
  unless ``$PANDACACHE_URL``) unless ``$PANDA_BEHIND_REAL_LB`` is set, and fails without DNS. The
  import sets that variable only while it runs (the one change to the environment), happens once,
  in a worker thread, on first use.
- panda-client's own request timeout is a fixed 600 s: a call is given up after
  ``PandaSettings.timeout`` (its worker thread ends when panda-client's own timeout does).

How the server answers (panda-server 1.0.4, ``pandaserver/api/v1/task_api.py``): every endpoint
needs an authenticated identity, any one will do for these reads; ``get_task_parameters`` reads
what was submitted (``T_TASK``), including ``userName``, which the server sets at submission.
"Task not found" (``get_task_parameters``) and "Task not found or error retrieving the details"
(``get_details``) are also what a database error gives, so before an answer becomes "unknown
task" ``get_datasets_and_files`` is asked, which tells the two apart (``_jedi_datasets``).
``get_tasks_detailed_info_since`` only sees tasks modified in the last 90 days (whatever its
docstring says about leaving out ``since``), and only the caller's own unless ``userName`` is given.

Credentials never reach a log line or an exception message: messages name the server by its URL
without user information, and any token text in a server's answer is masked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from idds_vis.domain.errors import SourceUnreachable
from idds_vis.ports.tasks import PandaTask

log = logging.getLogger(__name__)

AuthMode = Literal["oidc", "x509"]
_MAX_DETAIL_CHARS = 300
# panda-server answers these when the task is not there (the envelope has no error code).
_TASK_NOT_FOUND = "Task not found"
_DETAILS_NOT_FOUND = "Task not found or error retrieving the details"
_NO_FILES = "No data found for the task"
# Filter values with these characters are applied by panda-server as regular expressions.
_SERVER_REGEX_CHARS = frozenset("^$*+?\\|()")
_OUTPUT_TYPES = ("output", "log")


@dataclass(frozen=True)
class PandaSettings:
    """Where the PanDA server is and who we are to it.

    ``url``: the server, e.g. ``https://pandaserver.cern.ch:25443`` (a path such as
    ``/server/panda``, as in ``$PANDA_URL_SSL``, is ignored: the API lives under ``/api/v1``).
    ``auth="oidc"`` needs ``token_file`` (an ID token, read at every call) and ``vo`` (sent as
    ``Origin``, e.g. ``atlas`` or ``atlas.production``); ``auth="x509"`` needs ``proxy_file``
    (a grid proxy holding certificate and key) for an https server.
    """

    url: str
    auth: AuthMode = "oidc"
    token_file: Path | None = None
    vo: str | None = None
    proxy_file: Path | None = None
    ca_dir: Path | None = None  # CA certificates for https; None: the system's
    verify_host: bool = True
    timeout: float = 60.0  # seconds for one call

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PanDA URL {self.server!r} must be an absolute http(s) URL")
        if self.auth not in ("oidc", "x509"):
            raise ValueError(f"unknown PanDA auth mode {self.auth!r}: use 'oidc' or 'x509'")
        if self.auth == "oidc" and (self.token_file is None or not self.vo):
            raise ValueError("PanDA auth 'oidc' needs a token file and a VO")
        if self.auth == "x509" and parts.scheme == "https" and self.proxy_file is None:
            raise ValueError("PanDA auth 'x509' over https needs a proxy file")
        if self.timeout <= 0:
            raise ValueError("the PanDA timeout must be positive")

    @property
    def server(self) -> str:
        """``scheme://host[:port]``: how messages name the server (no user information)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"

    @property
    def api(self) -> str:
        return f"{self.server}/api/v1"


class PandaClientTasks:
    """``PandaTasks`` on a panda-server, through panda-client's transport."""

    def __init__(self, settings: PandaSettings) -> None:
        self.settings = settings

    async def task(self, task_id: int, *, details: bool = False) -> PandaTask | None:
        params = await self._get("task/get_task_parameters", {"task_id": task_id})
        if params is None:
            await self._jedi_datasets(task_id)  # raises if "not found" was a database error
            return None
        if not isinstance(params, dict):
            raise self._unreachable(f"task {task_id}: the task parameters are not a JSON object")
        status: str | None = None
        containers: tuple[str, ...] = ()
        if details:
            query = {"task_id": task_id, "include_parameters": False, "include_status": True}
            info = await self._get("task/get_details", query, not_found=_DETAILS_NOT_FOUND)
            if info is None and await self._jedi_datasets(task_id):
                raise self._unreachable(f"task/get_details failed for task {task_id}")
            # Still None: submitted, but JEDI has not taken the task yet.
            if isinstance(info, dict):
                status = _text(info.get("status"))
                containers = tuple(n for n in str(info.get("outDS") or "").split(",") if n)
        return PandaTask(
            task_id=task_id,
            task_name=_text(params.get("taskName")),
            status=status,
            user_name=_text(params.get("userName")),
            params=params,
            output_containers=containers,
        )

    async def task_id_by_name(self, task_name: str, user_name: str | None = None) -> int | None:
        """The highest jediTaskID named ``task_name`` (of ``user_name``, else of the identity
        asking: the server adds that condition itself), among tasks modified in 90 days."""
        filters = {"taskName": _exact(task_name)}
        if user_name is not None:
            filters["userName"] = _exact(user_name)
        found = await self._get(
            "task/get_tasks_detailed_info_since", {"filters": json.dumps(filters)}
        )
        ids = [
            int(task["jediTaskID"])
            for task in found or []
            if isinstance(task, dict) and task.get("taskName") == task_name
        ]
        return max(ids, default=None)

    async def output_files(self, task_id: int) -> list[dict[str, Any]]:
        """One dict per file: the server's ``lfn``, ``scope``, ``id`` (fileID) and ``status``,
        plus ``dataset`` (its name) and ``dataset_id``. Empty for an unknown task."""
        query = {"task_id": task_id, "dataset_types": list(_OUTPUT_TYPES)}
        datasets = await self._get("task/get_datasets_and_files", query, not_found=_NO_FILES)
        files: list[dict[str, Any]] = []
        try:
            for entry in datasets or []:
                dataset = entry.get("dataset") or {}
                for item in entry.get("files") or []:
                    files.append(
                        {**item, "dataset": dataset.get("name"), "dataset_id": dataset.get("id")}
                    )
        except (AttributeError, TypeError):
            raise self._unreachable(f"task {task_id}: the file list is not as expected") from None
        return files

    async def _jedi_datasets(self, task_id: int) -> bool:
        """Whether JEDI has datasets for the task, or SourceUnreachable on a database error.

        panda-server says "Task not found" for a task it does not know and for a database
        error alike (``getTaskParamsPanda`` returns "" on any exception; ``get_details`` says
        "Task not found or error retrieving the details"). ``get_datasets_and_files`` tells
        the two apart ("No data found for the task" / "Database exception ..."), so a PanDA
        database outage is not taken for an unknown task, which would drop the message.
        """
        datasets = await self._get(
            "task/get_datasets_and_files", {"task_id": task_id}, not_found=_NO_FILES
        )
        return bool(datasets)

    # -- one call -------------------------------------------------------------------------------
    async def _get(
        self, endpoint: str, query: Mapping[str, Any], not_found: str = _TASK_NOT_FOUND
    ) -> Any:
        """The ``data`` of the answer; None when the server's message is ``not_found``."""
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(self._request, endpoint, dict(query), not_found)
        except TimeoutError:
            raise self._unreachable(f"{endpoint}: no answer within {timeout:g} s") from None

    def _request(self, endpoint: str, query: dict[str, Any], not_found: str) -> Any:
        """In a worker thread: one GET and its envelope unwrapped, or SourceUnreachable."""
        url = f"{self.settings.api}/{endpoint}"
        try:
            transport = _transport_class()(self.settings)
            code, body = transport.get(url, query, json_out=True, repeating_keys=True)
        except OSError as exc:  # the token file
            raise self._unreachable(
                f"{endpoint}: cannot read the credentials: {exc.strerror}"
            ) from None
        except ValueError:  # json.JSONDecodeError is one
            raise self._unreachable(f"{endpoint}: the answer is not JSON") from None
        if code == 1:  # panda-client's code for "no HTTP answer at all"
            raise self._unreachable(f"{endpoint}: {self._clean(str(body))}")
        if code != 0:
            raise self._unreachable(f"{endpoint}: HTTP {code}: {self._clean(str(body))}")
        if not isinstance(body, dict) or "success" not in body:
            raise self._unreachable(f"{endpoint}: the answer is not a PanDA API envelope")
        if body["success"] is True:
            return body.get("data")
        message = str(body.get("message") or "")
        if message == not_found:
            log.debug("PanDA %s %s: %s", endpoint, query, message)
            return None
        raise self._unreachable(f"{endpoint} failed: {self._clean(message) or 'no reason given'}")

    def _unreachable(self, what: str) -> SourceUnreachable:
        return SourceUnreachable(f"PanDA server {self.settings.server}: {what}")

    def _clean(self, text: str) -> str:
        """A server's or library's words, fit for a log: one line, short, no token in it."""
        text = " ".join(text.split())
        token = _read_token(self.settings)
        if token:
            text = text.replace(token, "***")
        text = re.sub(r"Bearer\s+\S+", "Bearer ***", text)
        if len(text) > _MAX_DETAIL_CHARS:
            text = text[:_MAX_DETAIL_CHARS] + "..."
        return text


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _exact(value: str) -> str:
    """A filter value panda-server compares for equality (plain values go to SQL)."""
    if _SERVER_REGEX_CHARS.isdisjoint(value):
        return value
    return f"^{re.escape(value)}$"


def _read_token(settings: PandaSettings) -> str | None:
    if settings.auth != "oidc" or settings.token_file is None:
        return None
    try:
        return settings.token_file.read_text().strip() or None
    except OSError:
        return None


# -- panda-client's transport, configured from PandaSettings ----------------------------------
_IMPORT_LOCK = threading.Lock()
_NO_DNS_GAMES = "PANDA_BEHIND_REAL_LB"


@functools.cache
def _transport_class() -> type[Any]:
    """``Client._HttpClient`` with its settings from ``PandaSettings``; imported on first use."""
    with _IMPORT_LOCK:
        was_set = _NO_DNS_GAMES in os.environ
        os.environ.setdefault(_NO_DNS_GAMES, "1")
        try:
            from pandaclient import Client  # type: ignore[import-untyped]
        finally:
            if not was_set:
                os.environ.pop(_NO_DNS_GAMES, None)

    class Transport(Client._HttpClient):  # type: ignore[misc]
        # __init__ is not called on purpose: it reads $PANDA_AUTH and friends, and exits the
        # process when $PANDA_AUTH=oidc has no VO. These are all the attributes it sets.
        def __init__(self, settings: PandaSettings) -> None:
            self.settings = settings
            self.verify_host = settings.verify_host
            self.auth_mode = "oidc" if settings.auth == "oidc" else "voms"
            self.auth_vo = settings.vo
            self.id_token: str | None = None
            proxy = str(settings.proxy_file) if settings.proxy_file else ""
            self.ssl_certificate = self.ssl_key = proxy
            self.verbose = False  # verbose prints requests and answers to stdout

        def randomize_ip(self, url: str) -> str:
            return url

        def get_id_token(self, force_new: bool = False) -> bool:
            # Never the interactive device-code flow: the token file is the only source.
            path = self.settings.token_file
            token = path.read_text().strip() if path is not None else ""
            if not token:
                raise OSError(0, f"no token in {path}")
            self.id_token = token
            return True

        def _build_ssl_context(self, use_https: bool) -> ssl.SSLContext | bool:
            if not use_https:
                return False
            ca_dir = self.settings.ca_dir
            context = ssl.create_default_context(capath=str(ca_dir) if ca_dir else None)
            if not self.verify_host:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.auth_mode != "oidc":
                # As panda-client does: a grid proxy is self-issued, so it is also a CA.
                if self.verify_host:
                    context.load_verify_locations(cafile=self.ssl_certificate)
                context.load_cert_chain(certfile=self.ssl_certificate, keyfile=self.ssl_key)
            return context

    return Transport
