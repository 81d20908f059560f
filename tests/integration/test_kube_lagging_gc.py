"""Issue 16, item 4.1: the garbage collector lags a root's DELETE (on kube-controller-manager
v1.36 by 0.3-1.6 s, or as long as it is busy or stopped). A redeploy meanwhile must not adopt
the deleted UI's Service, Ingress, NetworkPolicy or Secret (the collector would delete them
under the new UI): it waits until they are gone and creates its own. The reconciler notices a
UI whose dependents vanished and starts it again. The emulator's collector is paused to lag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.fakes import wait_for_phase
from tests.integration.test_kube_deployer import NS, instance, kube_agent
from tests.k8s_emulator import KubeEmulator
from tests.k8s_emulator.resources import resolve

DEPENDENTS = ("secrets", "services", "ingresses", "networkpolicies")


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``condition`` holds (a state seen, not a time waited)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


def owner_uids(emu: KubeEmulator, name: str) -> dict[str, str | None]:
    found = {}
    for plural in DEPENDENTS:
        obj = emu.get(plural, name, NS)
        refs = (obj or {}).get("metadata", {}).get("ownerReferences") or [{}]
        found[plural] = refs[0].get("uid") if obj else None
    return found


async def test_a_redeploy_waits_for_the_deleted_uis_objects_instead_of_adopting_them(
    emu: KubeEmulator, deployer: KubernetesDeployer
) -> None:
    inst = instance("lag-1")
    first = await deployer.deploy(inst, None)
    emu.pause_gc()
    await deployer.delete(inst)
    assert emu.get("deployments", inst.name, NS) is None
    # The old root is gone, its dependents are not (the collector has not run).
    assert set(owner_uids(emu, inst.name).values()) - {None} == {first.handle["uid"]}

    redeploy = asyncio.create_task(deployer.deploy(inst, None))
    # The deployer met the leftover Secret (the first dependent) and is waiting for it to go.
    await until(lambda: redeploy.done() or emu.request_count("get", "secrets") >= 2,
                "the deployer polls the leftover Secret")  # fmt: skip
    assert not redeploy.done(), "adopted a dependent the collector is about to delete"
    emu.resume_gc()
    second = await redeploy
    assert second.handle["uid"] != first.handle["uid"]
    assert emu.get("deployments", inst.name, NS)["metadata"]["uid"] == second.handle["uid"]
    emu.api.gc.sweep()  # whatever the collector still had to do, done
    assert owner_uids(emu, inst.name) == {p: second.handle["uid"] for p in DEPENDENTS}
    await deployer.wait_started(inst, second, timeout=60)


async def test_a_root_being_deleted_is_waited_for_too(
    emu: KubeEmulator, deployer: KubernetesDeployer
) -> None:
    """Foreground deletion: the root stays, marked, until its dependents are gone."""
    inst = instance("lag-2")
    first = await deployer.deploy(inst, None)
    emu.pause_gc()
    emu.api.delete(resolve("deployments"), NS, inst.name, {"propagationPolicy": "Foreground"})
    assert emu.get("deployments", inst.name, NS)["metadata"].get("deletionTimestamp")
    redeploy = asyncio.create_task(deployer.deploy(inst, None))
    await until(lambda: redeploy.done() or emu.request_count("get", "deployments") >= 2,
                "the deployer polls the root being deleted")  # fmt: skip
    assert not redeploy.done()
    emu.resume_gc()
    second = await redeploy
    assert second.handle["uid"] != first.handle["uid"]
    assert owner_uids(emu, inst.name) == {p: second.handle["uid"] for p in DEPENDENTS}


async def test_a_leftover_that_never_goes_fails_the_deploy_with_a_reason(
    emu: KubeEmulator, deployer: KubernetesDeployer
) -> None:
    inst = instance("lag-3")
    await deployer.deploy(inst, None)
    emu.pause_gc()
    await deployer.delete(inst)
    deployer.leftover_wait = 1
    with pytest.raises(DeployError, match=r"Secret vis/\S+ is left from an earlier, deleted UI, "
                       r"and the garbage collector had not removed it after 1 s"):  # fmt: skip
        await deployer.deploy(inst, None)


async def test_a_ui_that_lost_a_dependent_is_not_healthy(
    emu: KubeEmulator, deployer: KubernetesDeployer
) -> None:
    """readyReplicas alone says nothing of a Service the collector removed."""
    inst = instance("lag-4")
    await deployer.wait_started(inst, await deployer.deploy(inst, None), timeout=60)
    (whole,) = await deployer.running()
    assert whole.healthy
    for plural in [p for p in DEPENDENTS if emu.get(p, inst.name, NS)]:
        emu.api.delete(resolve(plural), NS, inst.name, {})
        (ui,) = await deployer.running()
        assert not ui.healthy, f"healthy without its {plural}"
        await deployer.deploy(inst, None)  # puts it back
        (ui,) = await deployer.running()
        assert ui.healthy


async def test_the_reconciler_restarts_a_ready_ui_whose_service_is_gone(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    first = kube_agent(tmp_path, kubeconfig)
    events = first.events.subscribe()
    await first.start()
    await first.submit(VisRequest("lost-svc", source="https://bigpanda.example/x"))
    ready = await wait_for_phase(first, events, "lost-svc", {Phase.READY, Phase.FAILED})
    assert ready.phase is Phase.READY, ready.reason
    await first.stop()
    await first.ledger.close()
    await first.deployer.kube.close()  # type: ignore[attr-defined]

    emu.api.delete(resolve("services"), NS, ready.name, {})  # the pod stays Ready
    second = kube_agent(tmp_path, kubeconfig)
    events2 = second.events.subscribe()
    report = await second.start()
    try:
        assert report.restarted == [ready.name] and report.adopted == []
        again = await wait_for_phase(second, events2, "lost-svc", {Phase.READY, Phase.FAILED})
        assert again.phase is Phase.READY, again.reason
        root = emu.get("deployments", ready.name, NS)
        assert owner_uids(emu, ready.name)["services"] == root["metadata"]["uid"]
    finally:
        await second.stop()
        await second.ledger.close()
        await second.deployer.kube.close()  # type: ignore[attr-defined]
