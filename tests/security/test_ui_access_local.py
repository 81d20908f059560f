"""Issue 17 on the local deployer: a UI answers only to the people it is for, through the web
app's proxy, at a path nobody can compute from the task id.

Browser-style (aiohttp clients keeping cookies, the local OIDC issuer's authorization-code
flow), with the real local deployer running the stand-in UI process (``idds_vis.ui.stub``,
which enforces the proxy's secret header as serve-ui's ``ProxyGuard`` does) and the real
readiness probe.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest_asyncio
from yarl import URL

from idds_vis.agent.clock import SystemClock
from idds_vis.agent.service import Agent
from idds_vis.api import make_app, serving
from idds_vis.deploy.local import STAND_IN_UI, LocalProcessDeployer
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.naming import PROXY_HEADER, instance_name
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from tests.catalog_support import TASKS, TableDirectory, settings_for
from tests.fakes import FakeStager
from tests.oidc_issuer import Issuer, running_issuer
from tests.web_support import TableStarter, Task

VIS = "/api/v1/visualizations"
JOHN_USER = {"sub": "9a8b-john", "name": "john smith", "preferred_username": "jsmith",
             "groups": ["cms"]}  # fmt: skip


@dataclass
class LocalSite:
    agent: Agent
    deployer: LocalProcessDeployer
    issuer: Issuer
    url: str


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[LocalSite]:
    async with local_site(tmp_path, f"ui-access-{tmp_path.name}", STAND_IN_UI) as site:
        yield site


@contextlib.asynccontextmanager
async def local_site(tmp_path: Path, label: str, ui_argv: Sequence[str],
                     probe_interval: float = 0.05) -> AsyncIterator[LocalSite]:  # fmt: skip
    """The real agent with the local deployer (``ui_argv``'s UIs) behind the real web app."""
    async with running_issuer() as issuer:
        settings = settings_for(tmp_path, issuer)
        ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
        deployer = LocalProcessDeployer(tmp_path, label=label, ui_argv=ui_argv,
                                        poll_interval=0.05)  # fmt: skip
        agent = Agent(ledger=ledger, stager=FakeStager(), deployer=deployer,
                      probe=HttpReadinessProbe(interval=probe_interval), clock=SystemClock(),
                      poll_interval=0.05)  # fmt: skip
        await agent.start()
        tasks = {t.task_name or "": Task(t.task_id, source=t.source) for t in TASKS.values()}
        app = make_app(agent, settings, TableStarter(agent, tasks), poll_interval=0.05,
                       directory=TableDirectory(TASKS))  # fmt: skip
        try:
            async with serving(app, "127.0.0.1", 0) as url:
                deployer.proxy_base = url  # the web app's address is known once it listens
                yield LocalSite(agent, deployer, issuer, url)
        finally:
            for inst in await ledger.list():
                await deployer.delete(inst)
            await agent.stop()
            await ledger.close()


def browser(web: LocalSite) -> aiohttp.ClientSession:
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[URL(web.url)])
    return aiohttp.ClientSession(web.url, cookie_jar=jar, headers={"Origin": web.url})


async def sign_in(web: LocalSite, http: aiohttp.ClientSession, next_: str = "/catalog",
                  user: dict[str, object] | None = None) -> str:  # fmt: skip
    """Through the issuer (as ``user``, else its Jane) and back: where the app sends us."""
    before = dict(web.issuer.user)
    if user is not None:
        web.issuer.user = dict(user)
    try:
        async with http.get("/auth/login", params={"next": next_},
                            allow_redirects=False) as resp:  # fmt: skip
            authorize = resp.headers["Location"]
        async with http.get(authorize, allow_redirects=False) as resp:
            back = resp.headers["Location"]
        async with http.get(back, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            return resp.headers["Location"]
    finally:
        web.issuer.user = before


async def started_by_jane(web: LocalSite, http: aiohttp.ClientSession) -> Instance:
    async with http.get("/api/v1/me") as resp:
        token = (await resp.json())["csrf_token"]
    async with http.post(VIS, json={"task_id": "4242"}, headers={"X-CSRF-Token": token}) as resp:
        assert resp.status == 201, await resp.text()
    queue = web.agent.events.subscribe()
    try:
        while True:  # the agent's own events: no polling, no sleeps
            inst = await web.agent.ledger.get(InstanceKey("4242"))
            if inst is not None and inst.phase in (Phase.READY, Phase.FAILED):
                assert inst.phase is Phase.READY, inst.reason
                return inst
            await queue.get()
    finally:
        web.agent.events.unsubscribe(queue)


@contextlib.asynccontextmanager
async def jane_with_her_ui(web: LocalSite) -> AsyncIterator[tuple[aiohttp.ClientSession, Instance]]:
    async with browser(web) as jane:
        await sign_in(web, jane)
        yield jane, await started_by_jane(web, jane)


async def test_the_owner_opens_her_ui_through_the_proxy(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (jane, inst):
        assert inst.url is not None and inst.url.startswith(f"{web.url}/vis/")
        async with jane.get(inst.url) as resp:
            assert resp.status == 200
            assert "stand-in UI" in await resp.text()
        # The UI's own requests pass too: an asset and the read-only search POST.
        async with jane.get(inst.url + "static-files/stub.js") as resp:
            assert resp.status == 200
        async with jane.post(inst.url + "ajax-api/2.0/mlflow/experiments/search",
                             json={"max_results": 10}) as resp:  # fmt: skip
            assert resp.status == 200 and (await resp.json())["experiments"][0]["name"] == "exp"


async def test_another_user_gets_403_at_the_ui_and_at_the_record_api(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (_jane, inst), browser(web) as john:
        assert inst.url is not None
        await sign_in(web, john, user=JOHN_USER)
        async with john.get(inst.url) as resp:
            assert resp.status == 403
            assert "stand-in" not in await resp.text()
        async with john.get(f"{VIS}/4242/mlflow") as resp:
            assert resp.status == 403
            assert inst.url not in await resp.text()
        # The monitor's JSON leaves the URL out for him.
        async with john.get("/api/v1/tasks/4242") as resp:
            assert [i["url"] for i in (await resp.json())["instances"]] == [None]
        # Shared with his group, he sees it.
        await web.agent.ledger.set_visibility(  # type: ignore[attr-defined]
            inst.key, "groups:cms", web.agent.clock.now())
        async with john.get(inst.url) as resp:
            assert resp.status == 200
        async with aiohttp.ClientSession() as plain, plain.get(f"{web.url}/metrics") as resp:
            metrics = await resp.text()
        found = re.search(r'idds_vis_ui_access_denied_total\{reason="not_shared"\} (\S+)', metrics)
        assert found is not None and float(found.group(1)) >= 2


async def test_the_record_api_shows_the_url_to_the_owner_and_production(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (jane, inst):
        async with jane.get(f"{VIS}/4242/mlflow") as resp:
            assert resp.status == 200 and (await resp.json())["instance"]["url"] == inst.url
        robot = {"Authorization": f"Bearer {web.issuer.robot_token()}"}
        async with aiohttp.ClientSession(web.url) as api:
            async with api.get(f"{VIS}/4242/mlflow", headers=robot) as resp:
                assert resp.status == 200, await resp.text()
            async with api.get(URL(inst.url or "").path, headers=robot) as resp:
                assert resp.status == 200


async def test_an_anonymous_visitor_signs_in_and_comes_back_to_the_ui(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (_jane, inst), browser(web) as visitor:
        assert inst.url is not None
        path = URL(inst.url).path
        async with visitor.get(path, allow_redirects=False) as resp:
            assert resp.status == 303
            login = urlsplit(resp.headers["Location"])
        assert login.path == "/auth/login" and parse_qs(login.query)["next"] == [path]
        assert await sign_in(web, visitor, next_=path) == path
        async with visitor.get(path) as resp:
            assert resp.status == 200 and "stand-in UI" in await resp.text()


async def test_the_ui_process_refuses_a_direct_connection(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (_jane, inst):
        port = inst.handle["port"]
        direct = f"http://127.0.0.1:{port}{inst.prefix}/"
        secret = (web.deployer.instance_dir(inst.name) / "proxy.secret")
        assert secret.stat().st_mode & 0o777 == 0o600
        async with aiohttp.ClientSession() as http:
            async with http.get(direct) as resp:
                assert resp.status == 403
            async with http.get(direct, headers={PROXY_HEADER: "guessed"}) as resp:
                assert resp.status == 403
            async with http.post(direct + "ajax-api/2.0/mlflow/experiments/search",
                                 json={}) as resp:  # fmt: skip
                assert resp.status == 403
        # The secret is in no log and not on the UI's command line.
        log = (web.deployer.instance_dir(inst.name) / "ui.log").read_text()
        assert secret.read_text() not in log
        assert secret.read_text() not in str(inst.handle)


async def test_the_url_cannot_be_derived_from_the_task_id(web: LocalSite) -> None:
    async with jane_with_her_ui(web) as (jane, inst):
        assert inst.url is not None and inst.path_token is not None
        assert re.fullmatch(r"mlflow-[0-9a-f]{32}", inst.path_token)
        name = instance_name("4242", "mlflow")
        assert name not in inst.url and "4242" not in inst.url
        # The name-derived path of before leads nowhere now, even for the owner.
        async with jane.get(f"/vis/{name}/", allow_redirects=False) as resp:
            assert resp.status == 404


async def test_the_permalink_redirects_only_after_the_access_check(web: LocalSite) -> None:
    permalink = "/t/user.jdoe.mnist%2F/mlflow"
    async with jane_with_her_ui(web) as (jane, inst), browser(web) as john:
        async with jane.get(permalink, allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (302, inst.url)
        await sign_in(web, john, user=JOHN_USER)
        async with john.get(permalink, allow_redirects=False) as resp:
            assert resp.status == 403
            assert inst.url is not None and inst.url not in await resp.text()
