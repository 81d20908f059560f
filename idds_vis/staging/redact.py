"""URLs as they may appear in a failure reason: no credentials, no query-string secrets."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_KEY = re.compile(r"tok|secret|pass|pwd|key|sig|auth|cred|session|cookie", re.I)
_PLAIN_ID = re.compile(r"[0-9]{1,20}")
_KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")


def is_public_value(key: str, value: str) -> bool:
    """A query value shown as it is: numeric (a task or workload id) under a name that does
    not look like a credential's."""
    return bool(_PLAIN_ID.fullmatch(value)) and not _SECRET_KEY.search(key)


def is_public_key(key: str, value: str) -> bool:
    """A parameter's name may be shown, unless it may be the credential itself: ``?<token>``
    has no value (some share links are just that), and no parameter name is long."""
    return bool(value) and bool(_KEY_NAME.fullmatch(key))


def _shown_key(key: str, value: str) -> str:
    return key if is_public_key(key, value) else "***"


def redact_url(url: str) -> str:
    """Drop userinfo and fragment; keep only numeric, non-secret query values (task ids).

    An allow-list rather than a deny-list: an unknown parameter may be a credential, and
    BigPanDA's useful parameters (``workloadid=N``) are numeric.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = [
        (_shown_key(k, v), v if is_public_value(k, v) else "***")
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))
