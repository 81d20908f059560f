"""Who sent a broker message: a sender credential in the STOMP headers, checked by the intake.

Anyone who can publish to the broker can write a ``vis_request`` or a ``vis_teardown``; with
``message_auth`` set, the agent acts on those only when they carry a credential it verifies
(setting ``message_auth``: ``off``, ``hmac`` or ``bearer``; the keys in ``message_auth_file``).
PanDA ``task_status`` and iDDS ``work_processing`` messages need none: they name no source
and are resolved by asking PanDA or iDDS, never taken at their word.

- ``hmac``: headers ``idds-vis-sender: <name>`` and
  ``idds-vis-signature: hmac-sha256=<hex>``, the HMAC-SHA256, keyed with that sender's secret,
  of ``idds-vis-v1\\n<name>\\n<body>``: the body cannot be changed nor the name swapped.
- ``bearer``: header ``idds-vis-authorization: Bearer <token>``; the sender is the name the
  token is listed under. (Broker users who may read the queue see the token: prefer hmac.)

The keys file holds one ``name:secret`` per line (``#`` comments, blank lines ignored). A
verified name is the message's identity: the requester of what it starts, the only one (with
the production role) whose ``vis_teardown`` is honoured for it. Secrets are compared in
constant time and never appear in a reason. Replays are not prevented (a replayed message does
what the original did; the ledger is idempotent by task and tool).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SENDER_HEADER = "idds-vis-sender"
SIGNATURE_HEADER = "idds-vis-signature"
AUTHORIZATION_HEADER = "idds-vis-authorization"
_PREFIX = "hmac-sha256="
_CONTEXT = b"idds-vis-v1\n"
MAX_NAME_CHARS = 128

AuthMode = Literal["off", "hmac", "bearer"]
AUTH_MODES: tuple[AuthMode, ...] = ("off", "hmac", "bearer")


class KeysError(ValueError):
    """The keys file is malformed; the reason names the line, never its secret."""


@dataclass(frozen=True)
class Sender:
    """``name`` is None when nothing was verified (``message_auth: off``)."""

    name: str | None = None

    @property
    def verified(self) -> bool:
        return self.name is not None


ANONYMOUS = Sender()


@dataclass(frozen=True)
class Refused:
    reason: str


def parse_keys(text: str) -> dict[str, bytes]:
    """``name:secret`` lines -> {name: secret}."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        name, secret = name.strip(), secret.strip()
        if not sep or not name or not secret:
            raise KeysError(f"line {number} of the message keys file is not name:secret")
        if len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise KeysError(f"line {number} of the message keys file has an unusable name")
        if name in keys:
            raise KeysError(f"line {number} of the message keys file repeats {name!r}")
        keys[name] = secret.encode()
    return keys


def signature(name: str, key: bytes, body: bytes) -> str:
    """The ``idds-vis-signature`` header value of ``body`` sent by ``name``."""
    mac = hmac.new(key, _CONTEXT + name.encode() + b"\n" + bytes(body), hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def hmac_headers(name: str, key: bytes, body: bytes) -> dict[str, str]:
    """The headers a sender adds to a message it signs (iDDS works, tests)."""
    return {SENDER_HEADER: name, SIGNATURE_HEADER: signature(name, key, body)}


def bearer_headers(token: str) -> dict[str, str]:
    return {AUTHORIZATION_HEADER: f"Bearer {token}"}


def verify(
    headers: Mapping[str, str], body: bytes, mode: AuthMode, keys: Mapping[str, bytes]
) -> Sender | Refused:
    """The verified sender, ``ANONYMOUS`` when ``mode`` is off, or why the credential fails."""
    if mode == "off":
        return ANONYMOUS
    if mode == "hmac":
        return _verify_hmac(headers, body, keys)
    if mode == "bearer":
        return _verify_bearer(headers, keys)
    return Refused(f"message_auth {mode!r} is not one of {', '.join(AUTH_MODES)}")


def _verify_hmac(
    headers: Mapping[str, str], body: bytes, keys: Mapping[str, bytes]
) -> Sender | Refused:
    name = headers.get(SENDER_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not name or not given:
        return Refused(
            f"sender credential missing: this agent requires the {SENDER_HEADER} and "
            f"{SIGNATURE_HEADER} headers (message_auth: hmac)"
        )
    key = keys.get(name)
    # Compared even for an unknown name, so the time taken does not tell which names exist.
    expected = signature(name, key if key is not None else b"\0" * 32, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()) or key is None:
        return Refused("sender credential refused: the signature does not verify")
    return Sender(name)


def _verify_bearer(headers: Mapping[str, str], keys: Mapping[str, bytes]) -> Sender | Refused:
    value = headers.get(AUTHORIZATION_HEADER, "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refused(
            f"sender credential missing: this agent requires an {AUTHORIZATION_HEADER}: "
            "Bearer header (message_auth: bearer)"
        )
    given = token.strip().encode()
    found: str | None = None
    for name, secret in keys.items():  # every entry compared: no early exit on a match
        if hmac.compare_digest(secret, given):
            found = name
    if found is None:
        return Refused("sender credential refused: the token is not one this agent accepts")
    return Sender(found)
