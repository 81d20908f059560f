"""A real Kubernetes control plane for the whole session (like envtest), and per test a
namespace with conf/'s ServiceAccount, Role and RoleBinding, the agent's token-only kubeconfig
and the stand-in kubelet and ingress.

The binaries come from ``$IDDS_VIS_K8S_ASSETS`` (tests/run.sh points it at ../shared/k8s when
that exists). Without them these tests skip, except under ``CI``, where they fail: a CI run
must not pass by quietly proving nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from tests.real_k8s.control_plane import (
    AssetsMissing,
    ControlPlane,
    assets_dir,
    control_plane,
    unpack,
)
from tests.real_k8s.stand_ins import StandInIngress, StandInKubelet, admin_api

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SA = "idds-vis-agent"
_MEASURED = pytest.StashKey[dict[str, float]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.real_k8s)


@pytest.fixture(scope="session")
def k8s(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ControlPlane]:  # fmt: skip
    try:
        bin_dir = unpack(assets_dir())
    except AssetsMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the Kubernetes binaries are missing: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with control_plane(bin_dir, tmp_path_factory.mktemp("k8s")) as plane:
        measured = {"start_s": plane.started_in, "rss_start_mb": plane.rss_bytes() / 2**20}
        request.config.stash[_MEASURED] = measured
        yield plane
        measured["rss_end_mb"] = plane.rss_bytes() / 2**20


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    measured = terminalreporter.config.stash.get(_MEASURED, None)
    if measured:
        terminalreporter.write_line(
            "real Kubernetes control plane: started in {start_s:.1f} s, RSS {rss_start_mb:.0f} MB"
            " at start, {rss_end:.0f} MB at the end".format(
                rss_end=measured.get("rss_end_mb", 0.0), **measured)
        )  # fmt: skip


CONF_AGENT_NS, CONF_UI_NS = "idds-vis", "idds-vis-ui"  # conf/namespace.yaml


def conf_rbac(
    plane: ControlPlane, namespace: str, ui_namespace: str | None = None
) -> list[dict[str, object]]:
    """conf/'s ServiceAccount, Roles and RoleBindings as kustomize renders them, moved to
    ``namespace`` (the agent's) and ``ui_namespace`` (the UIs'; None: the agent's too, the
    single-namespace layout). kustomize itself would also move the agent's Deployment."""
    rendered = plane.kubectl("kustomize", str(CONF)).stdout
    moved = {CONF_AGENT_NS: namespace, CONF_UI_NS: ui_namespace or namespace}
    picked = []
    for doc in yaml.safe_load_all(rendered):
        if doc and doc.get("kind") in ("ServiceAccount", "Role", "RoleBinding"):
            doc["metadata"]["namespace"] = moved[doc["metadata"]["namespace"]]
            for subject in doc.get("subjects") or []:
                subject["namespace"] = moved[subject["namespace"]]
            picked.append(doc)
    assert {d["kind"] for d in picked} == {"ServiceAccount", "Role", "RoleBinding"}, picked
    return picked


@dataclass(frozen=True)
class AgentAccess:
    namespace: str
    kubeconfig: Path  # the ServiceAccount's token, not the admin's certificate
    token: str
    ui_namespace: str = ""  # the UIs' namespace; "": the agent's (single-namespace layout)

    @property
    def uis(self) -> str:
        return self.ui_namespace or self.namespace


@pytest.fixture
def agent_access(k8s: ControlPlane, tmp_path: Path) -> Iterator[AgentAccess]:
    """A namespace of its own per test (the control plane is shared by the session)."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    k8s.kubectl("create", "namespace", ns)
    objs = {"apiVersion": "v1", "kind": "List", "items": conf_rbac(k8s, ns)}
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(objs))
    # TokenRequest (POST serviceaccounts/NAME/token): a bound token, as a projected volume gets.
    token = k8s.kubectl("create", "token", SA, "-n", ns, "--duration=1h").stdout.strip()
    kubeconfig = k8s.token_kubeconfig(tmp_path / "agent.kubeconfig", ns, token)
    yield AgentAccess(ns, kubeconfig, token)
    # Background: the namespace controller empties it while later tests run.
    k8s.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def split_access(k8s: ControlPlane, tmp_path: Path) -> Iterator[AgentAccess]:
    """conf/'s two-namespace layout (issue 17), in a fresh pair of namespaces per test: the
    ServiceAccount and its Lease Role in the agent's, the deployer's Role in the UIs'."""
    tag = uuid.uuid4().hex[:10]
    ns, ui_ns = f"a-{tag}", f"u-{tag}"
    for name in (ns, ui_ns):
        k8s.kubectl("create", "namespace", name)
    objs = {"apiVersion": "v1", "kind": "List", "items": conf_rbac(k8s, ns, ui_ns)}
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(objs))
    token = k8s.kubectl("create", "token", SA, "-n", ns, "--duration=1h").stdout.strip()
    kubeconfig = k8s.token_kubeconfig(tmp_path / "agent.kubeconfig", ns, token)
    yield AgentAccess(ns, kubeconfig, token, ui_ns)
    for name in (ns, ui_ns):
        k8s.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest_asyncio.fixture
async def kubelet(k8s: ControlPlane, agent_access: AgentAccess) -> AsyncIterator[StandInKubelet]:
    api = await admin_api(k8s.admin_kubeconfig)
    try:
        async with StandInKubelet(api, agent_access.namespace) as stand_in:
            yield stand_in
    finally:
        await api.close()


@pytest_asyncio.fixture
async def ingress(k8s: ControlPlane, kubelet: StandInKubelet) -> AsyncIterator[StandInIngress]:
    pki = k8s.work / "pki"
    async with StandInIngress(kubelet, pki / "ingress.crt", pki / "ingress.key") as stand_in:
        yield stand_in


def run_checked(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, done.stderr
    return done  # type: ignore[no-any-return]
