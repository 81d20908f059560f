"""Issue 15, class 3 (the pod's part): a UI pod may connect to cluster DNS and to the artefact
servers the operator lists in ``ui_egress``, nothing else: no cluster service, no cloud
metadata endpoint, no Internet at large. Its serve-ui stages the source itself, so those
servers are all staging needs; by default none is listed.

Against the emulator, which validates a NetworkPolicy as kube-apiserver does; the selectors
are checked against the pods the Deployments really get."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.domain.errors import InvalidRequest
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_deployer
from tests.integration.test_kube_deployer import NS, instance
from tests.k8s_emulator import ApiError, KubeEmulator
from tests.k8s_emulator.selectors import selector_from_spec

DNS = {
    "to": [{"namespaceSelector": {}}],
    "ports": [{"port": p, "protocol": proto} for p in (53, 5353) for proto in ("UDP", "TCP")],
}


@pytest.fixture
async def emu() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


def deployer_for(emu: KubeEmulator, tmp_path: Path, **settings: Any) -> KubernetesDeployer:
    built = build_deployer(Settings(
        state_dir=tmp_path / "state", deployer="kubernetes", namespace=NS,
        kubeconfig=str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS)), **settings,
    ))  # fmt: skip
    assert isinstance(built, KubernetesDeployer)
    return built


async def test_by_default_a_ui_pod_reaches_cluster_dns_and_nothing_else(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    deployer = deployer_for(emu, tmp_path)
    try:
        inst, other = instance("egress-1"), instance("egress-2")
        for each in (inst, other):
            await deployer.wait_started(each, await deployer.deploy(each, None), timeout=60)
        policy = emu.get("networkpolicies", inst.name, NS)
        assert policy is not None
        spec = policy["spec"]
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
        assert spec["egress"] == [DNS]
        # It governs exactly this UI's pod: not the other UI's, not a pod of nobody's.
        selector = selector_from_spec(spec["podSelector"])
        chosen = [p["metadata"]["name"] for p in emu.list("pods", NS)
                  if selector.matches(p["metadata"].get("labels"))]  # fmt: skip
        mine = emu.list("pods", NS, f"app.kubernetes.io/instance={inst.name}")
        assert chosen == [p["metadata"]["name"] for p in mine] and len(chosen) == 1
        # Who may call in is unchanged: the ingress controller, on the UI's port.
        (rule,) = spec["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]  # fmt: skip
        assert rule["ports"] == [{"port": 5000, "protocol": "TCP"}]
    finally:
        await deployer.kube.close()


async def test_ui_egress_lists_the_artefact_servers_a_pod_may_reach(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    egress = [
        {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"], "ports": [443]},
        {"cidr": "2001:db8::/48", "ports": [443, "1094/TCP"]},
        {"cidr": "198.51.100.7/32"},  # every port
    ]
    deployer = deployer_for(emu, tmp_path, ui_egress=egress)
    try:
        inst = instance("egress-3")
        await deployer.deploy(inst, None)  # the emulator refuses an invalid policy (422)
        policy = emu.get("networkpolicies", inst.name, NS)
        assert policy is not None
        assert policy["spec"]["egress"] == [
            DNS,
            {"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
             "ports": [{"port": 443, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": "2001:db8::/48"}}],
             "ports": [{"port": 443, "protocol": "TCP"}, {"port": 1094, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": "198.51.100.7/32"}}]},
        ]  # fmt: skip
    finally:
        await deployer.kube.close()


@pytest.mark.parametrize(
    ("egress", "reason"),
    [
        ("10.0.0.0/8", "ui_egress must be a list"),
        ([{"cidr": "10.0.0.300/8"}], "ui_egress[0].cidr: "),
        ([{"cidr": "10.0.0.1/8"}], "ui_egress[0].cidr: 10.0.0.1/8 has host bits set"),
        ([{"cidr": "10.0.0.0/8", "except": ["192.0.2.0/24"]}], "192.0.2.0/24 is not inside"),
        ([{"cidr": "10.0.0.0/8", "ports": [0]}], "port 0 is not between 1 and 65535"),
        ([{"cidr": "10.0.0.0/8", "ports": ["https"]}], "'https' is not a port"),
        ([{"cidr": "10.0.0.0/8", "host": "x"}], "ui_egress[0] must be a mapping of cidr"),
    ],
)
def test_a_wrong_ui_egress_is_refused_with_a_reason(
    tmp_path: Path, egress: object, reason: str
) -> None:
    settings = Settings(state_dir=tmp_path, deployer="kubernetes", ui_egress=egress)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as caught:
        build_deployer(settings)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


async def test_the_emulator_refuses_an_invalid_policy_as_the_api_server_does(
    emu: KubeEmulator,
) -> None:
    """The shape checks the tests above rely on are real: a bad ipBlock is a 422."""
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24",
                                                      "except": ["198.51.100.0/24"]}}]}]}}
    emu.ensure_namespace(NS)
    with pytest.raises(ApiError) as caught:
        emu.create(body, NS)
    assert caught.value.code == 422
    assert "spec.egress[0].to[0].ipBlock.except[0]" in caught.value.message
