"""Issue 17 behind nginx forward-auth, end to end through the web app: with ``exposure:
ingress`` and a web app, the UI keeps its proxy guard. An Ingress of someone else's making (a
tenant's, to the UI's Service, past ``/auth/check``) would otherwise reach the UI; so the UI
answers only requests carrying its per-instance secret, which ``/auth/check`` hands nginx in
its allowing answer only (``auth-response-headers`` makes nginx set it on the request it
passes on, in place of any a client sent: ingress-nginx's ``proxy_set_header``).

The agent, its Kubernetes deployer and the web app are real, on the API emulator with UIs in a
namespace of their own; nginx is played by this test (it calls ``/auth/check`` and forwards
the answer's header); the UI's Service is serve-ui's real ``ProxyGuard`` on loopback, with the
secret the pod's environment gets from its Secret."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio

from idds_vis.api.auth import share_links
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.domain import proxy_tokens as tokens
from idds_vis.domain.models import Instance
from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.domain.proxy_tokens import is_proof
from tests.integration.test_kube_openshift_proxy import Service, kube_web_site, pod_secret
from tests.k8s_emulator import KubeEmulator
from tests.security.test_ui_access_local import (
    JOHN_USER,
    LocalSite,
    browser,
    sign_in,
    started_by_jane,
)

AGENT_NS, UI_NS = "agents", "uis"
WEB = "https://vis.example.org"
CHECK = "/auth/check"
VIS = "/api/v1/visualizations"


@pytest_asyncio.fixture
async def site(emu: KubeEmulator, tmp_path: Path) -> AsyncIterator[LocalSite]:
    async with kube_web_site(emu, tmp_path, "ingress") as made:
        yield made


async def nginx_check(http: aiohttp.ClientSession, uri: str, **headers: str
                      ) -> tuple[int, str | None]:  # fmt: skip
    """What nginx's auth subrequest gets: the status and the proxy header, if any."""
    async with http.get(CHECK, headers={"X-Original-URI": uri, **headers}) as resp:
        await resp.read()
        return resp.status, resp.headers.get(PROXY_HEADER)


def assert_objects_hold_no_secret(emu: KubeEmulator, inst: Instance, secret: str) -> None:
    """The pod gets the secret from its Secret by reference; no other object holds it."""
    root = emu.get("deployments", inst.name, UI_NS)
    assert root is not None
    (ui,) = root["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["valueFrom"] for e in ui["env"] if e["name"] == PROXY_SECRET_ENV]
    assert ref == {"secretKeyRef": {"name": inst.name, "key": PROXY_SECRET_ENV}}
    for kind in ("deployments", "services", "ingresses", "networkpolicies"):
        obj = emu.get(kind, inst.name, UI_NS)
        assert obj is not None and secret not in str(obj), f"the proxy secret is in the {kind}"
    # The kubelet's probes cannot carry it: they only connect (the agent's probe sends it).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in ui[probe] and ui[probe]["tcpSocket"] == {"port": "http"}


async def test_the_ui_behind_forward_auth_answers_only_what_auth_check_let_through(
    emu: KubeEmulator, site: LocalSite
) -> None:
    web = site
    async with browser(web) as jane, browser(web) as john, browser(web) as visitor:
        await sign_in(web, jane)
        inst = await started_by_jane(web, jane)
        path = f"{inst.prefix}/"
        asset = path + "static-files/main.js"
        secret = pod_secret(emu, inst)
        assert len(secret) >= 32
        assert_objects_hold_no_secret(emu, inst, secret)
        (ingress,) = emu.list("ingresses", UI_NS)
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/auth-url"] == f"{WEB}/auth/check"
        assert notes["nginx.ingress.kubernetes.io/auth-response-headers"] == PROXY_HEADER
        # The ingress controller still reaches the UI (with the header nginx sets).
        (rule,) = emu.get("networkpolicies", inst.name, UI_NS)["spec"]["ingress"]  # type: ignore[index]
        assert len(rule["from"]) == 2

        # Only an allowing answer carries a proof of the secret, never the secret itself (a
        # browser may call /auth/check too and keep what it got after losing access).
        status, proof = await nginx_check(jane, asset)
        assert status == 204 and proof is not None and secret not in proof
        assert is_proof(secret.encode(), proof.encode(), time.time())
        await sign_in(web, john, user=JOHN_USER)
        assert await nginx_check(john, asset) == (403, None)
        assert await nginx_check(visitor, asset) == (401, None)
        assert await nginx_check(jane, "/vis/mlflow-" + "0" * 32 + "/") == (403, None)
        assert await nginx_check(jane, "/catalog") == (400, None)

        # A share link's holder is let in, and gets it too, until the link is revoked.
        async with jane.get("/api/v1/me") as resp:
            csrf = {"X-CSRF-Token": (await resp.json())["csrf_token"]}
        async with jane.post(f"{VIS}/4242/mlflow/shares", json={}, headers=csrf) as resp:
            assert resp.status == 201, await resp.text()
            made = await resp.json()
        token = made["link"].rsplit("/s/", 1)[1]
        holder = {"Cookie": f"{share_links.COOKIE}={token}"}
        status, proof = await nginx_check(visitor, asset, **holder)
        assert status == 204 and proof is not None and is_proof(secret.encode(), proof.encode(),
                                                                  time.time())  # fmt: skip
        sid = made["share"]["id"]
        async with jane.post(f"{VIS}/4242/mlflow/shares/{sid}/revoke", headers=csrf) as resp:
            assert resp.status == 200
        assert await nginx_check(visitor, asset, **holder) == (403, None)

        # The UI (serve-ui's guard with the pod's secret) behind nginx, and behind a tenant's
        # Ingress that skips the check: only the request with the check's header is served.
        async with Service(secret) as origin, aiohttp.ClientSession() as direct:
            status, forwarded = await nginx_check(jane, asset)
            assert status == 204 and forwarded is not None
            async with direct.get(origin + asset, headers={PROXY_HEADER: forwarded}) as resp:
                assert resp.status == 200 and await resp.text() == f"stand-in UI at {asset}"
            # A proof kept past its lifetime, or made with another secret, lets nobody in.
            kept = tokens.proof(secret, time.time() - tokens.LIFETIME - 120)
            foreign = tokens.proof("another UI's secret", time.time())
            for headers in ({}, {PROXY_HEADER: "guessed"}, {PROXY_HEADER: secret[:-1]},
                            {PROXY_HEADER: kept}, {PROXY_HEADER: foreign}):  # fmt: skip
                async with direct.get(origin + asset, headers=headers) as resp:
                    assert resp.status == 403 and "stand-in" not in await resp.text()

        # The web app's own /vis/ proxy stays off here (nginx serves the UIs).
        async with jane.get(path) as resp:
            assert resp.status == 404

        # Another web app replica reads the secret from the Secret; an earlier UI's Secret
        # (owned by another root, not yet collected) is no source for this one's.
        ours = web.agent.deployer
        assert isinstance(ours, KubernetesDeployer)
        assert await KubernetesDeployer(ours.ks, ours.kube).proxy_headers(inst) == {
            PROXY_HEADER: secret}  # fmt: skip
        earlier = dataclasses.replace(inst, handle={**inst.handle, "uid": "an-earlier-root"})
        assert await KubernetesDeployer(ours.ks, ours.kube).proxy_headers(earlier) is None
