"""A standby pod's member mode (issue 18, ui/pod_member.py), as a real MLflow process on
loopback (the pod network stood in): idle it serves nothing, it refuses a hand-over without
its secret, stages the source handed to it itself and serves it read-only under the
instance's prefix, and refuses a second hand-over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from idds_vis.deploy.kubernetes.standby import post_hand_over
from idds_vis.deploy.pool import HANDOVER_PATH, SECRET_ENV, SECRET_HEADER, STATE_PATH
from idds_vis.domain.errors import DeployError
from idds_vis.ui.readonly_gate import READ_ONLY
from tests.demo_data import EXPERIMENT
from tests.panda_server import free_port

pytestmark = pytest.mark.mlflow
SECRET = "pod-secret-for-the-test"


async def _wait_listening(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll the member process (another process's state) until it answers its state path."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(base + STATE_PATH, headers={SECRET_HEADER: SECRET}) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert proc.poll() is None, "the member exited"
            assert loop.time() < deadline, "the member never listened"
            await asyncio.sleep(0.1)


async def test_a_standby_pod_member_stages_what_it_is_handed_and_serves_it_once(
    tmp_path: Path, demo_archive: Path
) -> None:
    port = free_port()
    env = {**os.environ, SECRET_ENV: SECRET}
    log = (tmp_path / "member.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "idds_vis.ui.pod_member", "--host", "127.0.0.1",
         "--port", str(port), "--workdir", str(tmp_path / "data"),
         "--allowed-host", "*.uis.svc"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_listening(base, proc)
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/vis/anything/health") as resp:
                assert resp.status == 503
            async with http.post(base + HANDOVER_PATH, json={}) as resp:
                assert resp.status == 403
        pod = {"metadata": {"name": "p"}, "status": {"podIP": "127.0.0.1"}}
        body = {"instance": "ui-1", "prefix": "/vis/abc123", "source": str(demo_archive),
                "env": {}, "guard": False}  # fmt: skip
        # The agent's call, to this port (a pod's is the UI port).
        import idds_vis.deploy.kubernetes.standby as sb

        saved, sb.UI_PORT = sb.UI_PORT, port
        try:
            await post_hand_over(pod, body, SECRET)
            with pytest.raises(DeployError, match="409"):
                await post_hand_over(pod, {**body, "source": "/etc"}, SECRET)
        finally:
            sb.UI_PORT = saved
        served = f"{base}/vis/abc123/"
        headers = {"Host": "ui-1.uis.svc"}  # the Service host, allowed by the pattern
        async with aiohttp.ClientSession() as http:
            async with http.post(served + "ajax-api/2.0/mlflow/experiments/search",
                                 json={"max_results": 10}, headers=headers) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
                names = [e["name"] for e in (await resp.json())["experiments"]]
            assert EXPERIMENT in names
            async with http.post(served + "ajax-api/2.0/mlflow/experiments/create",
                                 json={"name": "x"}, headers=headers) as resp:  # fmt: skip
                assert resp.status == 403
                assert (await resp.json())["message"] == READ_ONLY
            async with http.post(served + "ajax-api/2.0/mlflow/experiments/search",
                                 json={"max_results": 1},
                                 headers={"Host": "evil.example"}) as resp:  # fmt: skip
                assert resp.status == 403  # not an allowed host (DNS rebinding)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert SECRET not in (tmp_path / "member.log").read_text()
