"""How works running inside iDDS reach the idds-vis agent: STOMP to send, HTTP to read.

The works run in iDDS's own (thread-based) agents, so this is plain blocking code with
timeouts. Where the agent is comes from the iDDS server's environment, not from the workflow:
an author's workflow runs against whichever idds-vis the iDDS instance is configured with.

- ``IDDS_VIS_BROKERS``: ``host:port[,host:port]`` of the STOMP broker the agent consumes;
- ``IDDS_VIS_DESTINATION``: where to send (default ``/queue/idds-vis.requests``);
- ``IDDS_VIS_BROKER_USER``, ``IDDS_VIS_BROKER_PASSWORD`` or ``IDDS_VIS_BROKER_PASSWORD_FILE``;
- ``IDDS_VIS_API``: the agent's web app, e.g. ``https://vis.example.org`` (read-only JSON);
- ``IDDS_VIS_TOKEN_FILE``: a bearer token for those reads, when the web app requires an
  identity (login configured); read at every call, so a renewed token needs no restart.
- ``IDDS_VIS_SENDER`` with ``IDDS_VIS_SENDER_KEY_FILE``: sign every message (HMAC-SHA256, the
  agent's ``message_auth: hmac``) as that sender; or ``IDDS_VIS_SENDER_TOKEN_FILE``: send a
  bearer token with it (``message_auth: bearer``). Read at every send; see
  ``idds_vis.domain.senders``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stomp  # type: ignore[import-untyped]

from idds_vis.domain.senders import bearer_headers, hmac_headers

DEFAULT_DESTINATION = "/queue/idds-vis.requests"


class ChannelError(Exception):
    """The agent could not be reached; the message says where (never with credentials)."""


@dataclass(frozen=True)
class AgentEndpoint:
    brokers: tuple[tuple[str, int], ...]
    destination: str
    api_url: str
    user: str | None = None
    password: str | None = None
    timeout: float = 15.0
    token_file: str | None = None
    sender: str | None = None  # the name the agent's message keys file lists
    sender_key_file: str | None = None  # its HMAC key (message_auth: hmac)
    sender_token_file: str | None = None  # or its bearer token (message_auth: bearer)

    def credential_headers(self, body: bytes) -> dict[str, str]:
        """The sender credential headers for ``body`` (none when none is configured)."""
        if self.sender_key_file:
            if not self.sender:
                raise ChannelError("IDDS_VIS_SENDER_KEY_FILE is set without IDDS_VIS_SENDER")
            key = _read_secret(self.sender_key_file, "IDDS_VIS_SENDER_KEY_FILE")
            return hmac_headers(self.sender, key.encode(), body)
        if self.sender_token_file:
            token = _read_secret(self.sender_token_file, "IDDS_VIS_SENDER_TOKEN_FILE")
            return bearer_headers(token)
        return {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentEndpoint:
        env = os.environ if env is None else env
        brokers = []
        for entry in filter(None, (e.strip() for e in env.get("IDDS_VIS_BROKERS", "").split(","))):
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ChannelError(f"IDDS_VIS_BROKERS entry {entry!r} must be written host:port")
            brokers.append((host, int(port)))
        if not brokers:
            raise ChannelError("IDDS_VIS_BROKERS is not set on this iDDS server")
        api = env.get("IDDS_VIS_API", "").rstrip("/")
        if not api.startswith(("http://", "https://")):
            raise ChannelError("IDDS_VIS_API (the idds-vis web app's URL) is not set")
        password = env.get("IDDS_VIS_BROKER_PASSWORD")
        if password is None and env.get("IDDS_VIS_BROKER_PASSWORD_FILE"):
            password = Path(env["IDDS_VIS_BROKER_PASSWORD_FILE"]).read_text().strip()
        return cls(
            brokers=tuple(brokers),
            destination=env.get("IDDS_VIS_DESTINATION") or DEFAULT_DESTINATION,
            api_url=api,
            user=env.get("IDDS_VIS_BROKER_USER") or None,
            password=password,
            token_file=env.get("IDDS_VIS_TOKEN_FILE") or None,
            sender=env.get("IDDS_VIS_SENDER") or None,
            sender_key_file=env.get("IDDS_VIS_SENDER_KEY_FILE") or None,
            sender_token_file=env.get("IDDS_VIS_SENDER_TOKEN_FILE") or None,
        )


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ChannelError(f"cannot read {what}: {exc.strerror}") from None


class _Receipts(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.done: dict[str, threading.Event] = {}
        self.error: str | None = None

    def on_receipt(self, frame: Any) -> None:
        event = self.done.get(frame.headers.get("receipt-id", ""))
        if event is not None:
            event.set()

    def on_error(self, frame: Any) -> None:
        self.error = frame.headers.get("message") or "error frame"
        for event in self.done.values():
            event.set()


def send(endpoint: AgentEndpoint, message: dict[str, Any]) -> None:
    """Send one message and return once the broker has stored it (a receipt for the SEND)."""
    conn = stomp.Connection12(list(endpoint.brokers), heartbeats=(0, 0), timeout=endpoint.timeout)
    receipts = _Receipts()
    conn.set_listener("receipts", receipts)
    where = ", ".join(f"{h}:{p}" for h, p in endpoint.brokers)
    body = json.dumps(message).encode()
    credentials = endpoint.credential_headers(body)  # before connecting: a bad file fails fast
    try:
        conn.connect(endpoint.user, endpoint.password, wait=True)
    except Exception as exc:
        raise ChannelError(f"cannot connect to the idds-vis broker at {where}: {exc}") from None
    try:
        receipt = f"idds-vis-work-{uuid.uuid4().hex}"
        stored = receipts.done[receipt] = threading.Event()
        conn.send(
            endpoint.destination,
            body,
            content_type="application/json",
            headers={"persistent": "true", "receipt": receipt, **credentials},
        )
        if not stored.wait(endpoint.timeout) or receipts.error:
            why = receipts.error or f"no receipt within {endpoint.timeout:.0f} s"
            raise ChannelError(f"the broker at {where} did not store the message: {why}")
    finally:
        # The message is stored (or the error above says why not): a failed goodbye is harmless.
        with contextlib.suppress(Exception):
            conn.disconnect()


def task_status(endpoint: AgentEndpoint, task_id: str) -> dict[str, Any] | None:
    """The agent's JSON for a task, or None when it has no record of it."""
    url = f"{endpoint.api_url}/api/v1/tasks/{urllib.parse.quote(task_id, safe='')}"
    headers = {"Accept": "application/json"}
    if endpoint.token_file:
        try:
            token = Path(endpoint.token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ChannelError(f"cannot read IDDS_VIS_TOKEN_FILE: {exc.strerror}") from None
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if exc.code == 401:
            why = "no token was sent" if not endpoint.token_file else "it refused the token"
            raise ChannelError(f"the idds-vis agent at {url} needs an identity: {why} (set "
                               "IDDS_VIS_TOKEN_FILE on the iDDS server)") from None
        raise ChannelError(f"the idds-vis agent at {url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise ChannelError(f"cannot read {url}: {exc}") from None
