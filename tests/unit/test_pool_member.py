"""The pool member's prefix swap (issue 18): the instance's prefix in, the member's to MLflow,
and redirects back out under the instance's prefix."""

from __future__ import annotations

import asyncio
from typing import Any

from idds_vis.ui.handover import MEMBER_PREFIX
from idds_vis.ui.pool_member import PrefixSwap

OUTER = "/vis/mlflow-7-abc"


def run(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 308,
                    "headers": [(b"location", f"{MEMBER_PREFIX}/".encode()),
                                (b"x-other", MEMBER_PREFIX.encode())]})  # fmt: skip

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "raw_path": path.encode()}
    asyncio.run(PrefixSwap(app, OUTER, MEMBER_PREFIX)(scope, None, send))
    return seen, sent


def test_the_instance_prefix_reaches_mlflow_as_the_members_and_redirects_come_back() -> None:
    seen, sent = run(f"{OUTER}/ajax-api/2.0/mlflow/experiments/search")
    assert seen["path"] == f"{MEMBER_PREFIX}/ajax-api/2.0/mlflow/experiments/search"
    assert seen["raw_path"] == seen["path"].encode()
    headers = dict(sent[0]["headers"])
    assert headers[b"location"] == f"{OUTER}/".encode()
    assert headers[b"x-other"] == MEMBER_PREFIX.encode()  # only the redirect is rewritten


def test_paths_outside_the_prefix_pass_unchanged() -> None:
    for path in (f"{OUTER}x/health", "/vis/other/health", MEMBER_PREFIX + "/health"):
        assert run(path)[0]["path"] == path
