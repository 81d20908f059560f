"""The read-only gate on its own: an ASGI app that records what reaches it (no MLflow, fast)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from idds_vis.ui.readonly_gate import (
    BAD_PATH,
    PASS,
    READ_ONLY,
    ReadOnlyGate,
    check_prefix,
)

PREFIX = "/vis/mlflow-42-abcdef12"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(dict(scope))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def gate() -> ReadOnlyGate:
    return ReadOnlyGate(Recorder(), PREFIX)


def call(
    method: str, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, bytes, Recorder]:
    app = Recorder()
    g = ReadOnlyGate(app, PREFIX)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": headers or []}  # fmt: skip
    asyncio.run(g(scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, app


READS = [
    ("GET", ""),
    ("GET", "/"),
    ("GET", "/health"),
    ("HEAD", "/health"),
    ("GET", "/static-files/static/js/main.c2f5f8d4.js"),
    ("GET", "/get-artifact"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/ajax-api/2.0/mlflow/runs/search"),
    ("POST", "/ajax-api/2.0/mlflow/logged-models/search"),
    ("GET", "/ajax-api/2.0/mlflow/logged-models/m-123"),
    ("GET", "/ajax-api/2.0/mlflow/logged-models/m-123/artifacts/files"),
    ("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"),
    ("POST", "/ajax-api/3.0/mlflow/traces/search"),
    ("POST", "/ajax-api/3.0/mlflow/traces/metrics"),
    ("GET", "/ajax-api/3.0/mlflow/traces/tr-1"),
    ("POST", "/graphql"),
]

# A sample of every kind; tests/security/test_ui_write_surface.py checks MLflow's whole table.
REFUSED = [
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/sessions/s1/stream"),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/create"),
    ("POST", "/ajax-api/2.0/mlflow/runs/log-metric"),
    ("DELETE", "/ajax-api/2.0/mlflow/logged-models/m-123"),
    ("PATCH", "/ajax-api/2.0/mlflow/logged-models/m-123/tags"),
    ("POST", "/ajax-api/2.0/mlflow/logged-models"),
    ("POST", "/ajax-api/2.0/mlflow/traces"),
    ("GET", "/ajax-api/2.0/mlflow/gateway-proxy"),
    ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/list"),
    ("POST", "/gateway/openai/v1/chat/completions"),
    ("GET", "/ajax-api/3.0/mlflow/mcp-servers"),
    ("POST", "/ajax-api/3.0/jobs/"),
    ("GET", "/ajax-api/3.0/jobs/j-1"),
    ("POST", "/ajax-api/2.0/mlflow/artifacts/presigned-upload-url"),
    ("POST", "/ajax-api/3.0/mlflow/ui-telemetry"),
    ("GET", "/ajax-api/2.0/mlflow/webhooks"),
    ("POST", "/v1/traces"),
    ("GET", "/graphql"),
    ("POST", "/api/2.0/mlflow/runs/search"),  # the REST API: the UI uses /ajax-api only
    ("TRACE", "/health"),
    ("PROPFIND", "/"),
    ("POST", "/"),
    ("HEAD", "/ajax-api/2.0/mlflow/runs/search"),  # HEAD only where GET is allowed
]

# Paths that look like allowed ones but are not exactly: MLflow (werkzeug, starlette) might
# route some of them somewhere else, so none gets through.
TRICKS = [
    ("POST", "/ajax-api/2.0/mlflow/experiments/search/"),
    ("POST", "//ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/ajax-api//2.0/mlflow/experiments/search"),
    ("POST", "/./ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/ajax-api/2.0/mlflow/runs/../experiments/search"),
    ("POST", "/AJAX-API/2.0/mlflow/experiments/search"),
    ("GET", "/static-files/../../etc/passwd"),
    ("GET", "/ajax-api/2.0/mlflow/logged-models/../artifacts/files"),
    ("GET", "/ajax-api/2.0/mlflow/logged-models/a\\b/artifacts/files"),
    ("GET", "/get-artifact\x00"),
]


@pytest.mark.parametrize(("method", "rest"), READS)
def test_the_reads_the_ui_makes_get_through(method: str, rest: str) -> None:
    status, _, app = call(method, PREFIX + rest)
    assert status == 200
    assert len(app.calls) == 1


@pytest.mark.parametrize(("method", "rest"), REFUSED + TRICKS)
def test_everything_else_is_refused_before_mlflow_sees_it(method: str, rest: str) -> None:
    status, body, app = call(method, PREFIX + rest)
    assert status == 403
    assert json.loads(body) == {"error_code": "PERMISSION_DENIED", "message": READ_ONLY}
    assert app.calls == []


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ajax-api/2.0/mlflow/experiments/search",
        "/vis/other/ajax-api/2.0/mlflow/experiments/search",
        PREFIX + "x/health",  # a longer name with this one as its beginning
        "/ajax-api/2.0/mlflow-artifacts/artifacts/x",  # MLflow mounts this one unprefixed
    ],
)
def test_nothing_outside_the_instance_prefix_gets_through(path: str) -> None:
    status, _, app = call("GET", path)
    assert status == 403
    assert app.calls == []


@pytest.mark.parametrize(
    "value",
    [
        b"../../../etc/passwd",
        b"a/../../b",
        b"/etc/passwd",
        b"%2e%2e/%2e%2e/etc/passwd",
        b"%252e%252e%252fetc",  # encoded twice
        b"a\\..\\b",
        b"x%00y",
    ],
)
def test_an_artefact_path_that_leaves_the_artefacts_is_refused(value: bytes) -> None:
    for rest in ("/get-artifact", "/ajax-api/2.0/mlflow/artifacts/list",
                 "/model-versions/get-artifact"):  # fmt: skip
        status, body, app = call("GET", PREFIX + rest, b"run_uuid=r1&path=" + value)
        assert status == 400, (rest, value)
        assert json.loads(body)["message"] == BAD_PATH
        assert app.calls == []


def test_an_ordinary_artefact_path_is_served() -> None:
    status, _, app = call("GET", PREFIX + "/get-artifact", b"path=model/weights..txt&run_uuid=r1")
    assert status == 200 and len(app.calls) == 1


def test_a_cors_preflight_passes_only_for_a_method_the_route_allows() -> None:
    origin = (b"origin", b"http://127.0.0.1:5000")
    search = PREFIX + "/ajax-api/2.0/mlflow/runs/search"
    ok, _, app = call("OPTIONS", search, headers=[origin, (b"access-control-request-method",
                                                            b"POST")])  # fmt: skip
    assert ok == 200 and len(app.calls) == 1
    config = PREFIX + "/ajax-api/3.0/mlflow/assistant/config"
    for path, want in ((config, b"PUT"), (config, b"GET"), (search, b"DELETE")):
        asked = (b"access-control-request-method", want)
        status, _, app = call("OPTIONS", path, headers=[origin, asked])
        assert status == 403 and app.calls == []
    bare, _, app = call("OPTIONS", search)  # not a preflight
    assert bare == 403 and app.calls == []


def test_a_websocket_is_closed_and_lifespan_goes_to_the_app() -> None:
    app = Recorder()
    g = ReadOnlyGate(app, PREFIX)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(g({"type": "websocket", "path": PREFIX + "/health"}, receive, send))
    assert sent[0]["type"] == "websocket.close" and app.calls == []

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        app.calls.append(dict(scope))

    asyncio.run(ReadOnlyGate(lifespan_app, PREFIX)({"type": "lifespan"}, receive, send))
    assert app.calls == [{"type": "lifespan"}]


def test_decide_names_no_route_for_a_bad_prefix() -> None:
    assert gate().decide("GET", PREFIX + "/health") is PASS
    for bad in ("", "/", "vis/x", "/vis/x/", "/vis//x", "/vis/../x"):
        with pytest.raises(ValueError, match="prefix"):
            check_prefix(bad)
