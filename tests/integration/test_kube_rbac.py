"""conf/role.yaml grants exactly what the deployer and the leader lease really call (read off
the emulator's log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
NS = "vis"
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


def granted() -> set[tuple[str, str]]:
    role = yaml.safe_load((ROOT / "conf" / "role.yaml").read_text())
    return {(res, verb) for rule in role["rules"] for res in rule["resources"]
            for verb in rule["verbs"]}  # fmt: skip


async def exercise(emu: KubeEmulator, kubeconfig: str, exposure: str) -> None:
    kube = KubeClient(kubeconfig, call_timeout=5, retry_budget=5)
    ks = KubeSettings(namespace=NS, exposure=exposure)  # type: ignore[arg-type]
    deployer = KubernetesDeployer(ks, kube, watch_silence=2,
                                  secrets_for=lambda _: {"AWS_ACCESS_KEY_ID": "k"})  # fmt: skip
    try:
        inst = instance(f"rbac-{exposure}")
        deployment = await deployer.deploy(inst, None)
        await deployer.deploy(inst, None)  # the adopt path reads every kind back
        await deployer.wait_started(inst, deployment, timeout=60)
        await deployer.record_expiry(inst)
        await deployer.running()
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
    store = KubeLeaseStore(kube, NS, clock)
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
    async with KubeEmulator() as emu:
        kubeconfig = str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
        for exposure in ("ingress", "route"):
            await exercise(emu, kubeconfig, exposure)
        await exercise_the_lease(kubeconfig)
        used = {
            (r.resource, r.verb) for r in emu.faults.log if r.resource and r.verb != "discovery"
        }
    assert used - granted() == set(), "calls the Role does not allow"
    assert granted() - used - NOT_A_CALL == set(), "grants no call needs"


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
    assert needed and needed <= granted()
