"""The UI's write surface (issue 15, class 4): a real ``idds-vis serve-ui`` answers every write,
assistant, gateway, MCP, job and upload endpoint 403 "this UI is read-only" before MLflow sees
it, writes nothing (the agent's HOME, the UI's private HOME and the staged data are unchanged),
and still serves what the UI reads.

MLflow 3.17 wrote ``$HOME/.mlflow/assistant/config.json`` on ``PUT …/assistant/config`` and
created files where the caller said on ``POST …/assistant/skills/install``, whatever the store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.models import Deployment
from idds_vis.ui.readonly_gate import READ_GETS, READ_ONLY, READ_POSTS, ReadOnlyGate
from tests.demo_data import EXPERIMENT
from tests.integration.conftest import demo_archive, no_ui_left_behind  # noqa: F401
from tests.security.ui_process import PREFIX, agent_environment, serve_ui, snapshot

pytestmark = pytest.mark.mlflow

V2 = "ajax-api/2.0/mlflow/"
V3 = "ajax-api/3.0/mlflow/"
# What a refusal must never show: the store's own error text.
SQL_WORDS = ("sqlite", "SELECT", "INSERT", "UPDATE ", "readonly database", "Traceback")


def writes(exp: str, run: str, skills: Path) -> list[tuple[str, str, Any]]:
    """(method, path under the prefix, JSON body): one of each kind of endpoint that writes
    or reaches out, with bodies MLflow would act on."""
    return [
        # The assistant: its config in $HOME, skills installed where the caller says.
        ("PUT", V3 + "assistant/config",
         {"providers": {"claude_code": {"model": "default", "selected": True}}}),
        ("POST", V3 + "assistant/skills/install", {"type": "custom", "custom_path": str(skills)}),
        ("POST", V3 + "assistant/message", {"message": "hello", "context": {}}),
        ("GET", V3 + "assistant/config", None),
        ("GET", V3 + "assistant/providers", None),
        # Uploads and presigned uploads.
        ("POST", V2 + f"upload-artifact?run_uuid={run}&path=planted.txt", "planted"),
        ("PUT", "ajax-api/2.0/mlflow-artifacts/artifacts/planted.txt", "planted"),
        ("POST", V2 + "artifacts/presigned-upload-url", {"run_id": run, "path": "x"}),
        ("POST", "ajax-api/2.0/mlflow-artifacts/mpu/create/x", {"path": "x"}),
        # The tracking store.
        ("POST", V2 + "experiments/create", {"name": "vandal"}),
        ("POST", V2 + "experiments/delete", {"experiment_id": exp}),
        ("POST", V2 + "experiments/set-experiment-tag",
         {"experiment_id": exp, "key": "k", "value": "v"}),
        ("POST", V2 + "runs/create", {"experiment_id": exp}),
        ("POST", V2 + "runs/log-metric",
         {"run_id": run, "key": "loss", "value": 1.0, "timestamp": 1, "step": 99}),
        ("POST", V2 + "runs/log-batch", {"run_id": run, "metrics": []}),
        ("POST", V2 + "runs/set-tag", {"run_id": run, "key": "k", "value": "v"}),
        ("POST", V2 + "runs/delete", {"run_id": run}),
        ("POST", V2 + "runs/update", {"run_id": run, "status": "FAILED"}),
        ("POST", V2 + "runs/create-promptlab-run", {"experiment_id": exp}),
        ("POST", V2 + "logged-models", {"experiment_id": exp, "name": "m"}),
        ("POST", V2 + "traces", {"experiment_id": exp}),
        ("POST", V3 + "traces", {"trace": {}}),
        ("POST", V3 + "datasets/create", {"name": "d", "experiment_ids": [exp]}),
        ("POST", V3 + "scorers/register", {"experiment_id": exp, "name": "s"}),
        ("POST", V3 + "demo/generate", {}),
        ("POST", V2 + "webhooks", {"name": "w", "url": "http://127.0.0.1:9/", "events": []}),
        # The model and prompt registry.
        ("POST", V2 + "registered-models/create", {"name": "vandal-model"}),
        ("DELETE", V2 + "registered-models/delete", {"name": "vandal-model"}),
        ("POST", V2 + "model-versions/create", {"name": "vandal-model", "source": "/etc"}),
        ("POST", V2 + "registered-models/alias",
         {"name": "vandal-model", "alias": "a", "version": "1"}),
        # The gateway (a proxy to the internet), MCP servers, jobs, OTLP, telemetry.
        # (GET gateway-proxy?gateway_path=api/2.0/endpoints/, the UI's listing, is answered
        # {"endpoints": []} by the gate itself, as MLflow does with no gateway: issue 19.)
        ("GET", V2 + "gateway-proxy?gateway_path=gateway/e/invocations", None),
        ("POST", V2 + "gateway-proxy", {"gateway_path": "api/2.0/endpoints/"}),
        ("GET", V3 + "gateway/secrets/list", None),
        ("POST", V3 + "gateway/secrets/create", {"secret_name": "s", "secret_value": "v"}),
        ("POST", V3 + "gateway/endpoints/create", {"name": "e"}),
        ("POST", "gateway/openai/v1/chat/completions", {"model": "m", "messages": []}),
        ("GET", V3 + "mcp-servers", None),
        ("POST", V3 + "mcp-servers", {"name": "m"}),
        ("POST", "ajax-api/3.0/jobs/", {"function_fullname": "os.system", "params": {}}),
        ("POST", "ajax-api/3.0/jobs/search", {}),
        ("POST", V3 + "prompt-optimization/jobs", {}),
        ("POST", "v1/traces", {}),
        ("POST", V3 + "ui-telemetry", {"records": [{"x": 1}]}),
        ("GET", "graphql?query={__typename}", None),
    ]  # fmt: skip


async def test_every_write_endpoint_is_refused_and_nothing_is_written(
    tmp_path: Path,
    demo_archive: Path,  # noqa: F811
) -> None:
    home = tmp_path / "agent-home"
    home.mkdir()
    skills = tmp_path / "skills-destination"
    workdir = tmp_path / "ui"
    env = agent_environment(home)
    async with serve_ui(demo_archive, workdir, env) as ui, aiohttp.ClientSession() as http:
        exp, run = await experiment_and_run(http, ui.url)
        watched = (home, workdir / "staged", workdir / "run" / "home")
        before = snapshot(*watched)
        let_through = []
        for method, path, body in writes(exp, run, skills):
            status, text = await send(http, method, ui.url + path, body)
            if status != 403 or READ_ONLY not in text or any(w in text for w in SQL_WORDS):
                let_through.append(f"{method} {path}: {status} {text[:120]}")
        # Outside the prefix: MLflow mounts its artefact proxy there (no prefix at all).
        for method, path in (("PUT", "/api/2.0/mlflow-artifacts/artifacts/planted.txt"),
                             ("PUT", "/ajax-api/2.0/mlflow-artifacts/artifacts/planted.txt"),
                             ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
                             ("POST", "/api/2.0/mlflow/experiments/create")):  # fmt: skip
            status, text = await send(http, method, ui.base + path, {"name": "vandal"})
            if status != 403:
                let_through.append(f"{method} {path}: {status} {text[:120]}")
        # A CORS preflight for a write is refused too.
        preflight = {"Origin": ui.base, "Access-Control-Request-Method": "PUT"}
        async with http.options(ui.url + V3 + "assistant/config", headers=preflight) as resp:
            if resp.status != 403:
                let_through.append(f"OPTIONS (preflight PUT) assistant/config: {resp.status}")
        # A path that leaves the run's artefacts never reaches MLflow.
        for bad in ("../../../../etc/passwd", "%2e%2e/%2e%2e/staged/.idds-vis/store.db"):
            async with http.get(ui.url + f"get-artifact?run_uuid={run}&path={bad}") as resp:
                if resp.status != 400:
                    let_through.append(f"get-artifact path={bad}: {resp.status}")
        assert let_through == [], "\n".join(let_through)
        assert snapshot(*watched) == before
        assert not skills.exists()
        assert not (home / ".mlflow").exists()
        names = await experiment_names(http, ui.url)
        assert "vandal" not in names and EXPERIMENT in names


async def test_what_the_ui_reads_still_works(tmp_path: Path, demo_archive: Path) -> None:  # noqa: F811
    home = tmp_path / "agent-home"
    home.mkdir()
    async with serve_ui(demo_archive, tmp_path / "ui", agent_environment(home)) as ui:
        # The readiness probe: the page, the script asset it names, the experiment search.
        deployment = Deployment(url=ui.url, health_url=ui.url + "health", handle={})
        await HttpReadinessProbe(attempts=3).verify(deployment, (EXPERIMENT,))
        async with aiohttp.ClientSession() as http:
            exp, run = await experiment_and_run(http, ui.url)
            params = {"path": "weights.txt", "run_uuid": run}
            async with http.get(ui.url + "get-artifact", params=params) as resp:
                assert resp.status == 200
                assert "w0 =" in await resp.text()
            async with http.get(ui.url + V2 + "artifacts/list", params={"run_id": run}) as resp:
                assert "weights.txt" in [f["path"] for f in (await resp.json())["files"]]
            params = {"run_id": run, "metric_key": "loss"}
            async with http.get(ui.url + V2 + "metrics/get-history", params=params) as resp:
                assert len((await resp.json())["metrics"]) == 60
            async with http.head(ui.url + "health") as resp:
                assert resp.status == 200
            get = f'mlflowGetExperiment(input: {{experimentId: "{exp}"}})'
            query = {"query": "query { " + get + " { experiment { name } } }"}
            async with http.post(ui.url + "graphql", json=query) as resp:
                data = await resp.json()
                assert data["data"]["mlflowGetExperiment"]["experiment"]["name"] == EXPERIMENT


def test_the_gate_refuses_every_route_mlflow_mounts_that_is_not_a_known_read() -> None:
    """MLflow 3.17.2's whole route table (its Flask app and its FastAPI routers), read in a
    child process: every method of every route not on the gate's read lists is refused."""
    table = json.loads(subprocess.run(
        [sys.executable, "-c", ROUTE_TABLE], capture_output=True, text=True, check=True,
        env={**agent_environment(Path("/nonexistent")), "_MLFLOW_STATIC_PREFIX": PREFIX,
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ).stdout)  # fmt: skip
    assert len(table) > 300  # the table really was read
    gate = ReadOnlyGate(no_app, PREFIX)
    reads = {("GET", p) for p in READ_GETS} | {("POST", p) for p in READ_POSTS}
    wrongly_allowed: list[str] = []
    known_reads_missing = set(reads)
    for method, pattern in table:
        concrete = pattern.replace("{path}", "a/b").replace("{}", "x")
        relative = pattern.removeprefix(PREFIX + "/")
        known_reads_missing.discard((method, relative))
        if gate.decide(method, concrete).status == 0 and (method, relative) not in reads:
            wrongly_allowed.append(f"{method} {pattern}")
    assert wrongly_allowed == []
    # And each read the gate lets through is a route MLflow really has (no stale entry).
    assert known_reads_missing == set()


# Prints MLflow's routes as [method, path] with every parameter written "{}" (a rest-of-path
# one "{path}"), HEAD and OPTIONS left out (the gate decides them from GET and the preflight).
ROUTE_TABLE = r"""
import json, re
from mlflow.server.fastapi_app import app
from mlflow.server import app as flask_app
out = []
def walk(routes, prefix):
    for r in routes:
        if hasattr(r, "original_router"):
            walk(r.original_router.routes, prefix + (r.include_context.prefix or ""))
        elif hasattr(r, "methods") and r.methods:
            for m in r.methods:
                out.append([m, prefix + r.path])
walk(app.routes, "")
for rule in flask_app.url_map.iter_rules():
    for m in rule.methods:
        out.append([m, rule.rule])
def norm(p):
    p = re.sub(r"<path:[^>]+>|\{[^}:]+:path\}", "{path}", p)
    return re.sub(r"<[^>]+>|\{(?!path\})[^}]+\}", "{}", p)
print(json.dumps(sorted({(m, norm(p)) for m, p in out if m not in ("HEAD", "OPTIONS")})))
"""


async def no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("only decide() is called")


async def send(http: aiohttp.ClientSession, method: str, url: str, body: Any) -> tuple[int, str]:
    kwargs: dict[str, Any] = {}
    if isinstance(body, str):
        kwargs["data"] = body.encode()
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.text()


async def experiment_and_run(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with http.post(url + V2 + "experiments/search", json={"max_results": 100}) as resp:
        exp = next(e for e in (await resp.json())["experiments"] if e["name"] == EXPERIMENT)
    async with http.post(url + V2 + "runs/search",
                         json={"experiment_ids": [exp["experiment_id"]]}) as resp:  # fmt: skip
        (run,) = (await resp.json())["runs"]
    return str(exp["experiment_id"]), str(run["info"]["run_id"])


async def experiment_names(http: aiohttp.ClientSession, url: str) -> list[str]:
    async with http.post(url + V2 + "experiments/search", json={"max_results": 100}) as resp:
        return [e["name"] for e in (await resp.json())["experiments"]]
