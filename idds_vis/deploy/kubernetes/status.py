"""The API server's own word on a refused call (its Status message), fit to show a person:
secrets the deployer knows of are replaced, and every URL in it is redacted."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.staging.redact import is_public_key, is_public_value, redact_url

Scrub = Callable[[str], str]
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\\]+")
_LONGEST = 400  # a 422 can quote a whole object back; the start says what was wrong
_MIN_SECRET = 4  # shorter values would blank ordinary words


def scrubber(secrets: Iterable[str]) -> Scrub:
    """Replace each of ``secrets`` (longest first) by ``***``, then redact every URL."""
    values = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in values:
            text = text.replace(value, "***")
        return _URL.sub(lambda m: redact_url(m.group(0)), text)

    return scrub


def status_message(exc: ApiException, scrub: Scrub) -> str:
    """``HTTP 403 Forbidden: <the Status message>``, scrubbed and shortened."""
    head = f"HTTP {exc.status} {exc.reason}"
    body = exc.body
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, TypeError):
        parsed = None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    if not isinstance(message, str) or not message.strip():
        return head
    text = scrub(" ".join(message.split()))
    if len(text) > _LONGEST:
        text = text[:_LONGEST] + "…"
    return f"{head}: {text}"


def source_secrets(source: str) -> list[str]:
    """The parts of a source that may be secret: a password and every query value, as written
    and decoded (the source itself is shown redacted, as every URL is, by the scrubber)."""
    found: list[str] = []
    try:
        parts = urlsplit(source)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
    except ValueError:
        return found
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if key and not is_public_key(unquote_plus(key), unquote_plus(value)):
            found += [key, unquote_plus(key)]  # `?<token>`: the name is the credential
        # A workload id is no secret, and blanking it would blank it in object names too
        # (`mlflow-4242-…` read `mlflow-***-…` in the real server's messages).
        if is_public_value(unquote_plus(key), unquote_plus(value)):
            continue
        found += [value, unquote_plus(value)]
    return found
