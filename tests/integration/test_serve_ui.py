"""``idds-vis serve-ui`` alone, as the container entrypoint runs it: stage from a URL, serve."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from idds_vis.ui.readonly_gate import READ_ONLY
from tests.demo_data import EXPERIMENT

pytestmark = pytest.mark.mlflow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_ui_stages_a_downloadhpometrics_url_and_serves_it_read_only(
    tmp_path: Path, demo_archive: Path
) -> None:
    # BigPanDA's artefact URL: a tarball behind a query string, with no file extension.
    async def download(request: web.Request) -> web.StreamResponse:
        assert request.query["workloadid"] == "4242"
        return web.FileResponse(demo_archive)

    app = web.Application()
    app.router.add_get("/idds/downloadhpometrics/", download)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    ui_port = free_port()
    workdir = tmp_path / "ui"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idds_vis", "serve-ui",
        "--source", f"http://127.0.0.1:{http_port}/idds/downloadhpometrics/?workloadid=4242",
        "--prefix", "/vis/mlflow-4242-test", "--port", str(ui_port), "--workdir", str(workdir),
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{ui_port}/vis/mlflow-4242-test/"
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(180):  # a hang guard, not a timing assertion
                while True:
                    assert proc.returncode is None, "serve-ui exited early"
                    try:
                        async with http.get(base + "health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
            search = base + "ajax-api/2.0/mlflow/experiments/search"
            async with http.post(search, json={"max_results": 10}) as resp:
                names = [e["name"] for e in (await resp.json())["experiments"]]
            assert EXPERIMENT in names
            # Refused by the read-only gate before MLflow (and its SQL) sees it.
            async with http.post(base + "ajax-api/2.0/mlflow/experiments/create",
                                 json={"name": "x"}) as resp:  # fmt: skip
                assert resp.status == 403
                assert (await resp.json())["message"] == READ_ONLY
        staged = workdir / "staged"
        write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        writable = [
            p for p in staged.rglob("*") if not p.is_symlink() and p.stat().st_mode & write_bits
        ]
        assert writable == []
        assert (staged / ".idds-vis" / "manifest.json").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()
        await runner.cleanup()
        from idds_vis.staging.permissions import make_writable

        make_writable(workdir)


async def test_serve_ui_refuses_a_source_without_mlflow_data(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no runs here")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idds_vis", "serve-ui", "--source", str(empty),
        "--prefix", "/vis/x", "--port", str(free_port()), "--workdir", str(tmp_path / "ui"),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1  # a failure (exits.FAILED), not a usage error
    assert b"no MLflow data" in err
