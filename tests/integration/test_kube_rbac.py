"""conf/role.yaml grants exactly what the deployer and the leader lease really call, namespace
by namespace (read off the emulator's log): the Lease in the agent's namespace, the deployer's
calls in the UIs' (issue 17, least privilege), nothing cluster-wide and no Secret in the agent's
namespace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.lease import KubeLeaseStore
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from tests.fakes import ManualClock
from tests.k8s_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# conf/'s two namespaces (configmap.yaml: namespace, ui_namespace), used as they are here.
AGENT_NS, UI_NS = "idds-vis", "idds-vis-ui"
NS = UI_NS
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# OpenShift admission permissions, not calls: a Route's spec.host; blockOwnerDeletion on an
# owner reference (OwnerReferencesPermissionEnforcement).
NOT_A_CALL = {("routes/custom-host", "create"), ("deployments/finalizers", "update")}


def instance(task_id: str) -> Instance:
    return Instance(
        task_id=task_id,
        tool="mlflow",
        name=InstanceKey(task_id).name,
        phase=Phase.DEPLOYING,
        source="s3://bucket/task.tgz",
        ttl=timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )


def conf_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CONF / name).read_text()) if d]


def _kustomize_namespace() -> str | None:
    value = yaml.safe_load((CONF / "kustomization.yaml").read_text()).get("namespace")
    return str(value) if value else None


def agent_config() -> dict[str, Any]:
    (configmap,) = conf_docs("configmap.yaml")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def roles() -> dict[str, list[dict[str, Any]]]:
    """Each Role's rules by the namespace it lands in (kustomize's `namespace:` if it sets one)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in conf_docs("role.yaml"):
        assert doc["kind"] == "Role", f"conf/role.yaml holds a {doc['kind']}: nothing cluster-wide"
        ns = _kustomize_namespace() or doc["metadata"]["namespace"]
        found.setdefault(ns, []).extend(doc["rules"])
    return found


def granted(namespace: str) -> set[tuple[str, str]]:
    return {(res, verb) for rule in roles().get(namespace, []) for res in rule["resources"]
            for verb in rule["verbs"]}  # fmt: skip


async def exercise(
    emu: KubeEmulator, kubeconfig: str, exposure: str, web_url: str | None = None
) -> None:
    kube = KubeClient(kubeconfig, call_timeout=5, retry_budget=5)
    ks = KubeSettings(namespace=NS, exposure=exposure, web_url=web_url)  # type: ignore[arg-type]
    deployer = KubernetesDeployer(ks, kube, watch_silence=2,
                                  secrets_for=lambda _: {"AWS_ACCESS_KEY_ID": "k"})  # fmt: skip
    try:
        exposure = f"{exposure}-proxied" if web_url else exposure
        inst = instance(f"rbac-{exposure}")
        deployment = await deployer.deploy(inst, None)
        await deployer.deploy(inst, None)  # the adopt path reads every kind back
        await deployer.wait_started(inst, deployment, timeout=60)
        await deployer.record_expiry(inst)
        await deployer.running()
        await KubernetesDeployer(ks, kube).upstream(inst)  # OpenShift's web app reads the Secret
        bad = instance(f"rbac-bad-{exposure}")
        emu.set_behaviour("crash", name=bad.name)
        with pytest.raises(DeployError):
            await deployer.wait_started(bad, await deployer.deploy(bad, None), timeout=60)
        slow = instance(f"rbac-slow-{exposure}")
        emu.set_behaviour("never-ready", name=slow.name)
        with pytest.raises(DeployError, match="did not become ready"):
            await deployer.wait_started(slow, await deployer.deploy(slow, None), timeout=3)
        for each in (inst, bad, slow):
            await deployer.delete(each)
            assert await deployer.gone(each.name)
    finally:
        await kube.close()


async def exercise_the_lease(kubeconfig: str) -> None:
    """Create, renew, take over after the holder lapsed, release."""
    kube = KubeClient(kubeconfig, call_timeout=5, retry_budget=5)
    clock = ManualClock()
    store = KubeLeaseStore(kube, AGENT_NS, clock)
    try:
        assert await store.try_acquire("rbac-leader", "a", 15)
        assert await store.try_acquire("rbac-leader", "a", 15)
        assert not await store.try_acquire("rbac-leader", "b", 15)
        await clock.advance_to(clock.now() + timedelta(seconds=16))
        assert await store.try_acquire("rbac-leader", "b", 15)
        await store.release("rbac-leader", "b")
    finally:
        await kube.close()


async def test_the_role_lists_exactly_the_calls_the_deployer_makes(tmp_path: Path) -> None:
    config = agent_config()
    assert (config["namespace"], config["ui_namespace"]) == (AGENT_NS, UI_NS)
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", AGENT_NS))
        emu.ensure_namespace(UI_NS)
        for exposure in ("ingress", "route"):
            await exercise(emu, kubeconfig, exposure)
        await exercise(emu, kubeconfig, "route", "https://vis.example.org")  # the web app fronts
        await exercise_the_lease(kubeconfig)
        calls = [r for r in emu.faults.log if r.resource and r.verb != "discovery"]
    assert [r for r in calls if r.namespace is None] == [], "cluster-wide calls"
    for ns in (AGENT_NS, UI_NS):
        used = {(r.resource, r.verb) for r in calls if r.namespace == ns}
        assert used - granted(ns) == set(), f"calls the Role in {ns} does not allow"
        assert granted(ns) - used - NOT_A_CALL == set(), f"grants in {ns} no call needs"
    assert set(roles()) == {AGENT_NS, UI_NS}, "a Role in a namespace the agent does not use"


def test_the_agent_namespace_grants_no_secret_access() -> None:
    """The agent's own namespace holds its Lease and nothing it needs to read besides; the
    only Secrets it can reach are the UIs', in the UIs' namespace (issue 17)."""
    config = agent_config()
    agent_ns = config["namespace"]
    assert config.get("ui_namespace") not in (None, agent_ns), "the UIs share the agent's namespace"
    for rule in roles().get(agent_ns, []):
        assert not {"secrets", "*"} & set(rule["resources"]), rule
        assert "*" not in rule["verbs"] and "*" not in rule.get("apiGroups", []), rule
    for rule in roles()[config["ui_namespace"]]:
        assert "*" not in {*rule["resources"], *rule["verbs"], *rule["apiGroups"]}, rule
    # Each binding gives the agent's ServiceAccount one Role in that Role's own namespace.
    for binding in conf_docs("rolebinding.yaml"):
        assert binding["kind"] == "RoleBinding" and binding["roleRef"]["kind"] == "Role"
        (subject,) = binding["subjects"]
        assert (subject["kind"], subject["name"]) == ("ServiceAccount", "idds-vis-agent")
        assert subject.get("namespace", agent_ns) == agent_ns


@pytest.mark.parametrize("exposure", ["ingress", "route"])
def test_the_role_may_block_owner_deletion_of_every_owner_it_names(exposure: str) -> None:
    """With OwnerReferencesPermissionEnforcement (OpenShift's default admission), an owner
    reference with blockOwnerDeletion needs `update` on the owner's finalizers: without it a
    real server refuses every owned object with 403."""
    ks = KubeSettings(namespace=NS, exposure=exposure)  # type: ignore[arg-type]
    inst = instance("finalizers")
    root = objects.deployment(inst, ks, inst.source or "", inst.expires_at, True)
    root["metadata"]["uid"] = "8d3e9f0a-0000-4000-8000-000000000001"
    plural = {"Deployment": "deployments"}
    needed = {
        (f"{plural[ref['kind']]}/finalizers", "update")
        for obj in objects.dependents(inst, ks, root, {"AWS_ACCESS_KEY_ID": "k"})
        for ref in obj["metadata"]["ownerReferences"]
        if ref.get("blockOwnerDeletion")
    }
    assert needed and needed <= granted(UI_NS)
