"""OpenShift's Route has no forward-auth (issue 17): with a web app (``web_url``) and
``exposure: route`` the UI gets no Route of its own; the web app, the Route's backend, proxies
``/vis/`` to the UI's Service after its access check, with a per-instance secret the UI demands
(ui/proxy_guard.py). Against the API emulator, UIs in a namespace of their own."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.ui.proxy_guard import ProxyGuard
from tests.integration.test_kube_deployer import instance
from tests.k8s_emulator import KubeEmulator

AGENT_NS, UI_NS = "agents", "uis"
WEB = "https://vis.example.org"


def settings(exposure: str, web_url: str | None = WEB) -> KubeSettings:
    return KubeSettings(namespace=UI_NS, agent_namespace=AGENT_NS, exposure=exposure,  # type: ignore[arg-type]
                        web_url=web_url)  # fmt: skip


async def _kube(emu: KubeEmulator, tmp_path: Path) -> KubeClient:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS)
    emu.ensure_namespace(UI_NS)
    return KubeClient(str(kubeconfig), call_timeout=5, retry_budget=10)


@pytest.fixture
async def kube(emu: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kube = await _kube(emu, tmp_path)
    yield kube
    await kube.close()


def _pod_env(emu: KubeEmulator, container: dict[str, Any], name: str) -> str:
    """The value the kubelet gives the container's ``name`` variable (from its Secret)."""
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == name]
    secret = emu.get("secrets", ref["name"], UI_NS)
    assert secret is not None
    return base64.b64decode(secret["data"][ref["key"]]).decode()


async def _guard_answers(guard: ProxyGuard, headers: dict[str, str]) -> int:
    """The status the UI's proxy guard gives a request with ``headers``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ui"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    guard.app = app
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await guard({"type": "http", "headers": raw, "path": "/"}, receive, send)
    return int(sent[0]["status"])


async def test_on_openshift_the_web_app_fronts_the_ui(emu, kube, tmp_path) -> None:
    ks = settings("route")
    assert objects.proxied(ks)
    deployer = KubernetesDeployer(ks, kube, watch_silence=2)
    inst = instance("route-proxy-1")
    deployment = await deployer.deploy(inst, None)
    await deployer.wait_started(inst, deployment, timeout=60)
    # No Route: one to the UI's Service would let the router pass every request unchecked.
    assert emu.list("routes", UI_NS) == [] and emu.list("ingresses", UI_NS) == []
    (ui,) = emu.get("deployments", inst.name, UI_NS)["spec"]["template"]["spec"]["containers"]
    secret = _pod_env(emu, ui, PROXY_SECRET_ENV)
    assert len(secret) >= 32
    root = emu.get("deployments", inst.name, UI_NS)
    assert secret not in str(root), "the proxy secret is in the Deployment itself"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in ui[probe] and ui[probe]["tcpSocket"] == {"port": "http"}
    assert ["--allowed-host", f"{inst.name}.{UI_NS}.svc"] == ui["args"][-2:]
    # Only the web app's pods (the agent's, in its namespace) reach the UI; not the router.
    policy = emu.get("networkpolicies", inst.name, UI_NS)
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": AGENT_NS}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "idds-vis-agent"}},
    }]  # fmt: skip
    # The agent probes the Service with the secret (the public URL would ask for a sign-in).
    direct = f"http://{inst.name}.{UI_NS}.svc{inst.prefix}/"
    assert deployment.probe_url == direct and deployment.health_url == direct + "health"
    assert deployment.probe_headers == {PROXY_HEADER: secret}
    assert deployment.url == f"https://vis.example.org{inst.prefix}/"

    # A restart adopts the Secret as it is: the pod's secret stays the one the proxy sends.
    again = await deployer.deploy(inst, None)
    assert again.probe_headers == {PROXY_HEADER: secret}
    (running,) = await deployer.running()
    assert running.healthy, "a proxied UI has no Route to miss"
    fresh = KubernetesDeployer(ks, kube)  # another replica's web app: read from the cluster
    ready = instance("route-proxy-1")
    origin, headers = await fresh.upstream(ready) or ("", {})
    assert origin == f"http://{inst.name}.{UI_NS}.svc" and headers == {PROXY_HEADER: secret}

    # What the UI process does with that secret (serve-ui's guard): only the proxy passes.
    guard = ProxyGuard(None, secret)
    assert await _guard_answers(guard, headers) == 200
    assert await _guard_answers(guard, {}) == 403
    assert await _guard_answers(guard, {PROXY_HEADER: "x" + secret[1:]}) == 403

    await deployer.delete(inst)
    assert await deployer.gone(inst.name)
    assert await KubernetesDeployer(ks, kube).upstream(ready) is None  # no Secret any more


@pytest.mark.parametrize(
    ("exposure", "web_url", "kind"),
    # Behind nginx with a web app the UI is guarded too (test_kube_ingress_guard.py).
    [("route", None, "routes"), ("ingress", None, "ingresses")],
)
async def test_elsewhere_the_ui_keeps_its_own_exposure_and_no_proxy(
    emu, kube, exposure, web_url, kind
) -> None:
    ks = settings(exposure, web_url)
    assert not objects.proxied(ks)
    deployer = KubernetesDeployer(ks, kube, watch_silence=2)
    inst = instance(f"own-{exposure}-{bool(web_url)}")
    deployment = await deployer.deploy(inst, None)
    assert [o["metadata"]["name"] for o in emu.list(kind, UI_NS)] == [inst.name]
    (ui,) = emu.get("deployments", inst.name, UI_NS)["spec"]["template"]["spec"]["containers"]
    assert PROXY_SECRET_ENV not in [e["name"] for e in ui["env"]]
    assert ui["readinessProbe"]["httpGet"]["path"] == f"{inst.prefix}/health"
    assert await deployer.upstream(inst) is None and await deployer.proxy_headers(inst) is None
    (rule,) = emu.get("networkpolicies", inst.name, UI_NS)["spec"]["ingress"]
    ingress_ns = {"namespaceSelector": {"matchLabels": ks.ingress_namespace_labels}}
    assert rule["from"][0] == ingress_ns
    if web_url:  # behind forward-auth the agent probes the Service: its pods are admitted
        assert rule["from"][1]["podSelector"] == {
            "matchLabels": {"app.kubernetes.io/name": "idds-vis-agent"}}  # fmt: skip
        assert deployment.probe_url == f"http://{inst.name}.{UI_NS}.svc{inst.prefix}/"
        assert deployment.probe_headers == {}
    else:
        assert len(rule["from"]) == 1 and deployment.probe_url is None
    await deployer.delete(inst)
    assert await deployer.gone(inst.name)
