"""Issue 19, the physicist's walls that need no browser: the gate's landing in MLflow (the page
gets the landing script, the script opens the task's runs in the model-training mode), server
paths scrubbed from reasons, the progress list never ahead of its headline."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from idds_vis.api.page_state import page_state
from idds_vis.api.refusals import Refusals
from idds_vis.api.views import instance_json, scrub_paths, steps
from idds_vis.domain.models import Instance, PhaseEvent
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.ui.readonly_gate import LANDING_SCRIPT, ReadOnlyGate, landing_target

PREFIX = "/vis/mlflow-0123456789abcdef"
PAGE = b'<!doctype html><html><head><title>MLflow</title><script defer src="x.js"></script></head><body></body></html>'  # noqa: E501


class FakeMlflow:
    """MLflow's page and its experiments search, as the gate sees them."""

    def __init__(self, experiments: list[dict[str, Any]]) -> None:
        self.experiments = experiments
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(dict(scope))
        if scope["path"].endswith("/experiments/search"):
            body, kind = json.dumps({"experiments": self.experiments}).encode(), b"application/json"
        else:
            body, kind = PAGE, b"text/html; charset=utf-8"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def get(
    app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query,
             "headers": headers or [(b"host", b"127.0.0.1:8080")]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return (
        sent[0]["status"],
        dict(sent[0]["headers"]),
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


def test_the_page_gets_the_landing_script_before_mlflows_bundle() -> None:
    mlflow = FakeMlflow([])
    status, headers, body = get(ReadOnlyGate(mlflow, PREFIX), PREFIX + "/",
                                [(b"host", b"h"), (b"accept-encoding", b"gzip")])  # fmt: skip
    assert status == 200
    assert body.index(f'<script src="{LANDING_SCRIPT}"></script>'.encode()) < body.index(b"</head>")
    assert headers[b"content-length"] == str(len(body)).encode()
    # MLflow was asked for the page uncompressed (the gate reads it).
    assert all(k != b"accept-encoding" for k, _ in mlflow.seen[0]["headers"])


def test_the_landing_is_the_tasks_runs_in_the_model_training_mode() -> None:
    mlflow = FakeMlflow([{"experiment_id": "0", "name": "Default"},
                         {"experiment_id": "7", "name": "mnist"}])  # fmt: skip
    status, headers, body = get(ReadOnlyGate(mlflow, PREFIX), f"{PREFIX}/{LANDING_SCRIPT}")
    assert status == 200 and headers[b"content-type"].startswith(b"text/javascript")
    script = body.decode()
    assert '"#" + "/experiments/7/runs?workflowType=machine_learning"' in script
    assert '"mlflow.telemetry.info.alert.dismissed_v1": true' in script
    assert '"mlflow.assistant.panelOpen_v1": false' in script
    assert '"mlflow.detectIssues.guidanceShown_v1": true' in script
    # The search went to MLflow under the prefix, with no cookie of the person.
    (search,) = [s for s in mlflow.seen if s["path"].endswith("/experiments/search")]
    assert search["path"] == f"{PREFIX}/ajax-api/2.0/mlflow/experiments/search"


def test_landing_targets() -> None:
    assert landing_target([{"experiment_id": "0"}]) == (
        "/experiments/0/runs?workflowType=machine_learning")  # fmt: skip
    several = [{"experiment_id": "1"}, {"experiment_id": "2"}]
    assert landing_target(several) == "/experiments?workflowType=machine_learning"
    assert landing_target(None) == "/experiments?workflowType=machine_learning"
    # An id that is not an id never reaches the script.
    assert landing_target([{"experiment_id": "1\";alert(1)//"}]) == (
        "/experiments?workflowType=machine_learning")  # fmt: skip


def test_reasons_lose_the_servers_paths() -> None:
    assert scrub_paths("cannot read /srv/idds-vis/state/ui/x/ui.log.") == "cannot read …/ui.log."
    assert scrub_paths("file:///tmp/job/out.tgz is gone") == "…/out.tgz is gone"
    assert scrub_paths("in ~/data/x (size)") == "in …/x (size)"
    assert scrub_paths("'/home/agent/.cache/a' missing") == "'…/a' missing"
    # URLs and plain words stay.
    kept = "see https://panda.example/task/5/ and s3://bucket/key: no MLflow data in s"
    assert scrub_paths(kept) == kept


def instance(phase: Phase, t: datetime, reason: str | None = None) -> Instance:
    return Instance("5151", "mlflow", "mlflow-5151", phase, "s", timedelta(hours=1), t, t,
                    reason=reason)  # fmt: skip


def test_the_monitor_json_and_refusals_carry_no_server_path() -> None:
    t = datetime(2026, 12, 6, 6, 42, tzinfo=UTC)
    inst = instance(Phase.FAILED, t, reason="staging failed: /var/lib/idds-vis/staging/5151/"
                    "x.db is not a database")  # fmt: skip
    assert instance_json(inst, None)["reason"] == "staging failed: …/x.db is not a database"
    refusals = Refusals()
    refusals.remember("user.a", "no outputs under /eos/atlas/user/a/out", t)
    assert refusals.reason("user.a", t) == "no outputs under …/out"


def test_the_step_list_is_never_ahead_of_the_record() -> None:
    t = datetime(2026, 12, 6, 6, 42, tzinfo=UTC)
    inst = instance(Phase.RESOLVING, t)
    # The history was read a moment after the record: it has the next step already.
    history = [
        PhaseEvent("5151", "mlflow", phase, t + timedelta(seconds=i))
        for i, phase in enumerate((Phase.REQUESTED, Phase.RESOLVING, Phase.STAGING))
    ]
    states = {s.phase: s.state for s in steps(inst, history)}
    assert states["resolving"] == "current"
    assert states["staging"] == "pending"


def test_the_headline_tells_the_current_step_and_pages_show_no_server_path() -> None:
    t = datetime(2026, 12, 6, 6, 42, tzinfo=UTC)
    for phase in (Phase.RESOLVING, Phase.STAGING, Phase.DEPLOYING, Phase.STARTING):
        inst = instance(phase, t)
        history = [PhaseEvent("5151", "mlflow", p, t) for p in (Phase.REQUESTED, phase)]
        state = page_state("user.a.b", "mlflow", inst, history, t)
        (current,) = [s for s in state["steps"] if s.state == "current"]
        assert state["headline"] == current.label
    failed = instance(Phase.FAILED, t, reason="cannot read /srv/state/ui/5151/ui.log")
    assert page_state("a", "mlflow", failed, [], t)["detail"] == "cannot read …/ui.log"
    refused = page_state("a", "mlflow", None, [], t, refusal="no outputs in /eos/u/a/out")
    assert refused["detail"] == "no outputs in …/out"


def test_the_development_sign_in_stays_on_loopback() -> None:
    from idds_vis.api.auth.config import auth_config
    from idds_vis.api.auth.dev_sign_in import identity, is_loopback
    from idds_vis.domain.errors import InvalidRequest

    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.0.2.7", "idds-vis.example.org", "", None):
        assert not is_loopback(host), host
    assert auth_config(Settings(dev_sign_in=True)).login
    issuer = "https://iam.example.org/"
    for refused in (Settings(dev_sign_in=True, web_host="0.0.0.0"),
                    Settings(dev_sign_in=True, oidc_issuer=issuer)):  # fmt: skip
        with pytest.raises(InvalidRequest) as caught:
            auth_config(refused)
        assert "\n" not in str(caught.value)
    who = identity(" jdoe ", "atlas/ml, /atlas/production/", frozenset({"/atlas/production"}))
    assert (who.user, who.groups, who.production) == (
        "jdoe", frozenset({"atlas/ml", "atlas/production"}), True)  # fmt: skip
    for user, groups in (("", ""), ("a b", ""), ("<script>", ""), ("jdoe", "atlas ml")):
        with pytest.raises(InvalidRequest):
            identity(user, groups, frozenset())


def test_the_catalogs_refusals_carry_no_server_path() -> None:
    from idds_vis.api.routes.catalog import _refused
    from idds_vis.domain.errors import InvalidRequest

    answer = _refused(InvalidRequest("cannot read /srv/idds-vis/sources/5151.tgz: denied"))
    assert answer.status == 400
    assert json.loads(answer.text or "") == {"error": "cannot read …/5151.tgz: denied"}


def test_the_gateway_endpoints_listing_is_answered_empty_and_nothing_else_passes() -> None:
    proxy = f"{PREFIX}/ajax-api/2.0/mlflow/gateway-proxy"
    mlflow = FakeMlflow([])
    gate = ReadOnlyGate(mlflow, PREFIX)
    status, _, body = get(gate, proxy, query=b"gateway_path=api%2F2.0%2Fendpoints%2F")
    assert (status, json.loads(body)) == (200, {"endpoints": []})
    others = (b"", b"gateway_path=gateway/x/invocations", b"gateway_path=../x",
              b"gateway_path=api/2.0/endpoints/&json_data=x")  # fmt: skip
    for query in others:
        status, _, _ = get(gate, proxy, query=query)
        assert status == 403, query
    assert mlflow.seen == []
