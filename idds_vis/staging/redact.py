"""URLs as they may appear in a failure reason: no credentials, no query-string secrets."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_KEY = re.compile(r"tok|secret|pass|pwd|key|sig|auth|cred|session|cookie", re.I)
_PLAIN_ID = re.compile(r"[0-9]{1,20}")


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
        (k, v if _PLAIN_ID.fullmatch(v) and not _SECRET_KEY.search(k) else "***")
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))
