"""The captured messages in tests/fixtures/messages (copies of the shared captures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "messages"


def fixture_message(name: str) -> tuple[dict[str, str], bytes]:
    """(headers, body bytes); headers are empty where only the body was captured."""
    path = FIXTURES / name
    data = json.loads(path.read_text())
    if "body" in data and "headers" in data:  # captured with the broker headers
        return data["headers"], json.dumps(data["body"]).encode()
    return {}, path.read_bytes().strip()


def fixture_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(fixture_message(name)[1])
    return body
