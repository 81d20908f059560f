"""The images as a cluster runs them: the UI pod serving a staged task, the agent starting/stopping.

The UI container runs with the pod spec the Kubernetes deployer builds (objects.deployment),
translated field by field (tests/images/pod.py): read-only root, uid 10001, every capability
dropped, no privilege escalation, emptyDir tmpfs on /tmp and /data. Containers share the host's
network (no bridge networks here), so the one change made to the pod's arguments is the address:
127.0.0.1 and a free port instead of 0.0.0.0:5000.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.models import Deployment, Instance, InstanceKey
from idds_vis.domain.phases import Phase
from tests.demo_data import EXPERIMENT
from tests.images.conftest import Images
from tests.images.pod import container_argv, podman_run_args
from tests.images.podman import PODMAN, ROOT, image_size, run

pytestmark = pytest.mark.images
UI_IMAGE_LIMIT = 600 * 10**6
# What the UI image leaves out (images/ui.Dockerfile NOT_SERVED): the server never imports it.
NOT_SERVED = ("sklearn", "scipy", "pyarrow", "matplotlib", "asyncpg", "networkx", "pip")
START_TIMEOUT = 240.0  # staging, the store's migration, and MLflow's import on a loaded machine
K8S_DEFAULT_GRACE = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A throwaway HTTP server on loopback serving one directory, as BigPanDA serves archives."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def container(name: str, args: list[str]) -> Iterator[str]:
    """A detached container; its log is printed (captured by pytest) and it is removed after."""
    run(PODMAN, "run", "--detach", "--name", name, "--network=host", *args, timeout=120)
    try:
        yield name
    finally:
        logs = subprocess.run([PODMAN, "logs", name], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        print(f"--- {name} log ---\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
        subprocess.run([PODMAN, "rm", "--force", "--time", "5", name], capture_output=True,
                       timeout=120, check=False)  # fmt: skip


def state(name: str) -> tuple[str, int]:
    out = run(PODMAN, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name,
              timeout=60)  # fmt: skip
    status, code = out.split()
    return status, int(code)


async def wait_until_answers(url: str, name: str, headers: dict[str, str] | None = None) -> None:
    """Until ``url`` answers 200, failing at once if the container has exited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            status, code = await asyncio.to_thread(state, name)
            assert status == "running", f"{name} {status} (exit {code}) before {url} answered"
            assert loop.time() < deadline, f"{url} did not answer within {START_TIMEOUT:.0f} s"
            await asyncio.sleep(1)  # polling a starting server; the check above ends it early


def process_status(name: str) -> dict[str, str]:
    text = run(PODMAN, "exec", name, "cat", "/proc/1/status", timeout=60)
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def ui_pod(source: str, port: int, workdir: Path) -> tuple[Instance, list[str], list[str]]:
    """The deployer's own Deployment and Secret for a UI: podman options, and the container's
    arguments as the kubelet expands them, with our address."""
    key = InstanceKey(f"images-{uuid.uuid4().hex[:8]}", "mlflow")
    now = datetime.now(UTC)
    inst = Instance(task_id=key.task_id, tool=key.tool, name=key.name, phase=Phase.DEPLOYING,
                    source=source, ttl=timedelta(hours=1),
                    created_at=now, updated_at=now)  # fmt: skip
    ks = KubeSettings(namespace="idds-vis", public_host="127.0.0.1", scheme="http")
    dep = objects.deployment(inst, ks, source, None, secret=False)
    dep["metadata"]["uid"] = str(uuid.uuid4())  # as the API server would set it
    owned = objects.dependents(inst, ks, dep, None)
    secrets = {o["metadata"]["name"]: o["stringData"] for o in owned if o["kind"] == "Secret"}
    pod = dep["spec"]["template"]["spec"]
    args = container_argv(pod, secrets)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    return inst, podman_run_args(pod, workdir, secrets=secrets), args


def test_the_ui_image_is_at_most_600_mb(images: Images) -> None:
    size = image_size(images.ui)
    print(f"UI image {size / 1e6:.0f} MB, agent image {image_size(images.agent) / 1e6:.0f} MB")
    assert size <= UI_IMAGE_LIMIT, f"{size / 1e6:.0f} MB"


def test_the_ui_image_leaves_out_what_the_server_never_imports(images: Images) -> None:
    code = ("import importlib.util as u\n"
            f"print(' '.join(m for m in {NOT_SERVED!r} if u.find_spec(m)))")  # fmt: skip
    out = run(PODMAN, "run", "--rm", "--network=host", "--entrypoint", "python3", images.ui,
              "-c", code, timeout=120)  # fmt: skip
    assert out.strip() == ""


async def test_ui_pod_serves_a_task_staged_over_http_read_only(
    images: Images, demo_archive: Path, tmp_path: Path
) -> None:
    port = free_port()
    with serving(demo_archive.parent) as base_url:
        inst, options, args = ui_pod(f"{base_url}/{demo_archive.name}", port, tmp_path)
        assert args[args.index("--source") + 1].startswith(base_url)  # expanded from the Secret
        name = f"idds-vis-ui-{uuid.uuid4().hex[:8]}"
        with container(name, [*options, images.ui, *args]):
            url = f"http://127.0.0.1:{port}{inst.prefix}/"
            await wait_until_answers(f"http://127.0.0.1:{port}{inst.prefix}/health", name)
            # Ready the way the agent decides it: page, asset, and the staged experiment listed.
            deployment = Deployment(url=url, health_url=f"{url}health")
            await HttpReadinessProbe().verify(deployment, (EXPERIMENT,))

            # The security context really applies to the running process.
            status = process_status(name)
            assert status["Uid"].split()[:2] == ["10001", "10001"]
            assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
            assert status["NoNewPrivs"].strip() == "1"
            touch = [PODMAN, "exec", name, "touch", "/opt/idds-vis/x"]
            denied = subprocess.run(touch, capture_output=True, text=True, timeout=60, check=False)
            assert denied.returncode != 0 and "Read-only file system" in denied.stderr

            # A write through the UI is refused, and nothing is written.
            api = f"{url}ajax-api/2.0/mlflow/experiments/"
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{api}create", json={"name": "intruder"}) as resp:
                    assert 400 <= resp.status < 500, (resp.status, await resp.text())
                async with session.post(f"{api}search", json={"max_results": 1000}) as resp:
                    listed = {e["name"] for e in (await resp.json())["experiments"]}
            assert EXPERIMENT in listed and "intruder" not in listed


def agent_pod() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "conf" / "deployment.yaml").read_text()))
    (dep,) = [d for d in docs if d and d.get("kind") == "Deployment"]
    pod: dict[str, Any] = dep["spec"]["template"]["spec"]
    return pod


def agent_config(port: int) -> str:
    """The ConfigMap's settings, minus what needs the cluster (PostgreSQL, the Kubernetes API)."""
    docs = list(yaml.safe_load_all((ROOT / "conf" / "configmap.yaml").read_text()))
    (configmap,) = [d for d in docs if d and d.get("kind") == "ConfigMap"]
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    for cluster_only in ("database_url", "deployer", "web_url"):
        config.pop(cluster_only, None)
    config.update({"web_host": "127.0.0.1", "web_port": port, "public_host": "127.0.0.1"})
    return yaml.safe_dump(config)


async def test_agent_pod_answers_healthz_and_stops_cleanly_on_sigterm(
    images: Images, tmp_path: Path
) -> None:
    port = free_port()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(agent_config(port))
    for path in (config_dir, config_dir / "config.yaml"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # a ConfigMap volume is world-readable
    pod = agent_pod()
    command = container_argv(pod)
    grace = int(pod.get("terminationGracePeriodSeconds", K8S_DEFAULT_GRACE))
    options = podman_run_args(pod, tmp_path, sources={"config": config_dir})
    name = f"idds-vis-agent-{uuid.uuid4().hex[:8]}"
    with container(name, [*options, "--entrypoint", command[0], images.agent, *command[1:]]):
        await wait_until_answers(f"http://127.0.0.1:{port}/healthz", name)
        # podman stop sends SIGTERM and SIGKILLs after the grace, as the kubelet does: exit 0
        # means the agent ended by itself within it.
        await asyncio.to_thread(run, PODMAN, "stop", "--time", str(grace), name,
                                timeout=grace + 60)  # fmt: skip
        assert state(name) == ("exited", 0)
