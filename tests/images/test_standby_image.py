"""A standby pod as a cluster runs it (issue 18): the UI image started with the standby pod's
own spec (``deploy/kubernetes/standby.py``: its command, arguments, security context, the
hand-over secret from its Secret), idle until the agent's one authenticated hand-over, then
staging the handed source itself and serving it read-only, never a second one.

The real control plane has no kubelet and the emulator runs no image: this is where the
standby pod's command meets the image it names. Translated to podman as the UI pod's test
does (tests/images/pod.py); the one change is the address (127.0.0.1 and a free port).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from idds_vis.deploy.kubernetes import standby
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.pool import HANDOVER_PATH, SECRET_HEADER, STATE_PATH
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Deployment
from idds_vis.ui.readonly_gate import READ_ONLY
from tests.demo_data import EXPERIMENT
from tests.images.conftest import Images
from tests.images.pod import container_argv, podman_run_args
from tests.images.podman import PODMAN, run
from tests.images.test_images import (
    container,
    free_port,
    process_status,
    serving,
    wait_until_answers,
)

pytestmark = pytest.mark.images


def standby_container(
    port: int, secret: str, workdir: Path
) -> tuple[list[str], list[str], list[str]]:
    """The standby pod the agent creates: podman options, the command (the pod's ``command``
    replaces the image's entrypoint, as the kubelet does) and its arguments, our address."""
    ks = KubeSettings(namespace="idds-vis", public_host="127.0.0.1", scheme="http")
    root = standby.standby_root(ks, "mlflow")
    root["metadata"]["uid"] = str(uuid.uuid4())  # as the API server would set it
    name = f"idds-vis-standby-{uuid.uuid4().hex[:8]}"
    pod = standby.standby_pod(ks, "mlflow", name, "v-test", root)
    pod["metadata"]["uid"] = str(uuid.uuid4())
    spec = pod["spec"]
    secret_obj = standby.pod_secret(ks, pod, secret)
    stores = {name: secret_obj["stringData"]}
    (spec_container,) = spec["containers"]
    command = list(spec_container["command"])
    argv = container_argv(spec, stores)[len(command) :]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return podman_run_args(spec, workdir, secrets=stores), command, argv


async def test_a_standby_pod_of_the_ui_image_takes_one_hand_over_and_serves_it_read_only(
    images: Images, demo_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    secret = secrets.token_urlsafe(32)
    options, command, args = standby_container(port, secret, tmp_path)
    base = f"http://127.0.0.1:{port}"
    name = f"idds-vis-standby-{uuid.uuid4().hex[:8]}"
    entrypoint = ["--entrypoint", json.dumps(command)]
    with (
        serving(demo_archive.parent) as files,
        container(name, [*options, *entrypoint, images.ui, *args]),
    ):
        # Idle: listening (the pod's TCP probe), its state only to the agent, no UI yet.
        await wait_until_answers(base + STATE_PATH, name, {SECRET_HEADER: secret})
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/vis/anything/health") as resp:
                assert resp.status == 503
            async with http.get(base + STATE_PATH) as resp:
                assert resp.status == 403
            async with http.post(base + HANDOVER_PATH, json={}) as resp:
                assert resp.status == 403

        # The agent's hand-over (deploy/kubernetes/deployer.py's body), to this pod's port.
        monkeypatch.setattr(standby, "UI_PORT", port)
        pod = {"metadata": {"name": name}, "status": {"podIP": "127.0.0.1"}}
        prefix = f"/vis/{secrets.token_hex(16)}"
        body = {"instance": "ui-standby-image", "prefix": prefix,
                "source": f"{files}/{demo_archive.name}", "env": {}, "guard": False,
                "allow_private_addresses": []}  # fmt: skip
        await standby.post_hand_over(pod, body, secret)
        with pytest.raises(DeployError, match="409"):  # one hand-over, ever
            await standby.post_hand_over(pod, {**body, "prefix": "/vis/other"}, secret)

        url = f"{base}{prefix}/"
        await wait_until_answers(f"{url}health", name)
        await HttpReadinessProbe().verify(Deployment(url=url, health_url=f"{url}health"),
                                          (EXPERIMENT,))  # fmt: skip
        api = f"{url}ajax-api/2.0/mlflow/experiments/"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api}create", json={"name": "intruder"}) as resp:
                assert resp.status == 403
                assert (await resp.json())["message"] == READ_ONLY
            async with http.get(f"{base}/vis/other/health") as resp:
                assert resp.status in (403, 404)  # serves its instance's prefix only

        # The pod's security context applies to the member too.
        status = process_status(name)
        assert status["Uid"].split()[:2] == ["10001", "10001"]
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
        # The hand-over secret reaches neither the process's arguments nor its log.
        inspected = run(PODMAN, "inspect", "--format", "{{json .Config.Cmd}}", name, timeout=60)
        assert secret not in inspected
        logs = subprocess.run([PODMAN, "logs", name], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert secret not in logs.stdout + logs.stderr
