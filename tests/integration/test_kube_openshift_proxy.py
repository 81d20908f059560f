"""Issue 17 on OpenShift, end to end through the web app: with ``exposure: route`` and a web
app, the web app (the Route's backend) passes ``/vis/<path>/`` to the UI's Service only for the
people the UI is for, with the per-instance secret the deployer kept in the UI's Secret; the UI
(the real ``ProxyGuard`` of serve-ui, in uvicorn) refuses anything without it.

The agent, its Kubernetes deployer and the web app are real, on the API emulator with UIs in a
namespace of their own. No cluster DNS here: the UI's Service address (``objects.service_origin``)
is pointed at a loopback server running the guard with the secret the pod would get."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import uvicorn

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance
from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.ledger import SqlLedger
from idds_vis.ui.proxy_guard import ProxyGuard
from tests.catalog_support import TASKS, TableDirectory, settings_for
from tests.fakes import FakeProbe, FakeStager
from tests.k8s_emulator import KubeEmulator
from tests.oidc_issuer import running_issuer
from tests.security.test_ui_access_local import (
    JOHN_USER,
    LocalSite,
    browser,
    sign_in,
    started_by_jane,
)
from tests.web_support import TableStarter, Task

AGENT_NS, UI_NS = "agents", "uis"
HANG_GUARD = 30.0


async def stand_in_ui(scope: Any, receive: Any, send: Any) -> None:
    body = f"stand-in UI at {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class Service:
    """A UI's Service stood in on loopback: serve-ui's guard in front of a stand-in UI."""

    def __init__(self, secret: str) -> None:
        config = uvicorn.Config(ProxyGuard(stand_in_ui, secret), host="127.0.0.1", port=0,
                                lifespan="off", log_level="warning")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(HANG_GUARD):
            while not self.server.started:  # uvicorn's own flag, set once it listens
                await asyncio.sleep(0.01)
        (sock,) = self.server.servers[0].sockets
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task


@pytest_asyncio.fixture
async def site(
    emu: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[LocalSite, dict[str, str]]]:
    origins: dict[str, str] = {}  # instance name -> where its "Service" listens
    monkeypatch.setattr(objects, "service_origin",
                        lambda inst, ks: origins.get(inst.name, "http://127.0.0.1:9"))  # fmt: skip
    async with kube_web_site(emu, tmp_path, "route") as made:
        yield made, origins


@asynccontextmanager
async def kube_web_site(emu: KubeEmulator, tmp_path: Path, exposure: str
                        ) -> AsyncIterator[LocalSite]:  # fmt: skip
    """The agent on the Kubernetes deployer (the emulator; UIs in their own namespace) with
    the web app in front, ``web_url`` set and UIs exposed by ``exposure`` (route or ingress),
    signed in through a running OIDC issuer; everything deleted after."""
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS)
    emu.ensure_namespace(UI_NS)
    kube = KubeClient(str(kubeconfig), call_timeout=5, retry_budget=10)
    async with running_issuer() as issuer:
        ks = KubeSettings(namespace=UI_NS, agent_namespace=AGENT_NS, exposure=exposure,
                          web_url="https://vis.example.org")  # fmt: skip
        deployer = KubernetesDeployer(ks, kube, watch_silence=2)
        ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
        agent = Agent(ledger=ledger, stager=FakeStager(), deployer=deployer, probe=FakeProbe(),
                      clock=SystemClock(), poll_interval=0.05)  # fmt: skip
        await agent.start()
        tasks = {t.task_name or "": Task(t.task_id, source=t.source) for t in TASKS.values()}
        app = make_app(agent, settings_for(tmp_path, issuer), TableStarter(agent, tasks),
                       poll_interval=0.05, directory=TableDirectory(TASKS))  # fmt: skip
        try:
            async with serving(app, "127.0.0.1", 0) as url:
                yield LocalSite(agent, deployer, issuer, url)  # type: ignore[arg-type]
        finally:
            for inst in await ledger.list():
                await deployer.delete(inst)
            await agent.stop()
            await ledger.close()
            await kube.close()


def pod_secret(emu: KubeEmulator, inst: Instance) -> str:
    """The secret the UI's pod gets (its env's secretKeyRef, resolved from the Secret)."""
    dep = emu.get("deployments", inst.name, UI_NS)
    (ui,) = dep["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in ui["env"] if e["name"] == PROXY_SECRET_ENV]
    secret = emu.get("secrets", ref["name"], UI_NS)
    return base64.b64decode(secret["data"][ref["key"]]).decode()


async def test_the_web_app_fronts_openshift_uis_for_whom_they_are_for(emu, site) -> None:
    web, origins = site
    async with browser(web) as jane, browser(web) as john, browser(web) as visitor:
        await sign_in(web, jane)
        inst = await started_by_jane(web, jane)
        assert emu.list("routes", UI_NS) == [], "a Route would bypass the web app"
        path = f"{inst.prefix}/"
        async with Service(pod_secret(emu, inst)) as origin:
            origins[inst.name] = origin
            async with jane.get(path + "static-files/main.js") as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.text() == f"stand-in UI at {inst.prefix}/static-files/main.js"
            await sign_in(web, john, user=JOHN_USER)
            async with john.get(path) as resp:
                assert resp.status == 403 and "stand-in" not in await resp.text()
            async with visitor.get(path, allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"].startswith("/auth/login?")
            # Straight to the Service, as any pod the NetworkPolicy let through would be.
            async with aiohttp.ClientSession() as direct:
                for headers in ({}, {PROXY_HEADER: "guessed"}):
                    async with direct.get(origin + path, headers=headers) as resp:
                        assert resp.status == 403
