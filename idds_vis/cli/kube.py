"""``idds-vis deploy`` and ``teardown --backend kubernetes``: one UI's objects, without an agent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer, SecretsFor
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.kubernetes.status import scrubber, source_secrets, status_message
from idds_vis.domain.errors import DeployError, VisError
from idds_vis.domain.models import DEFAULT_TOOL, Instance, InstanceKey
from idds_vis.domain.phases import Phase


def _instance(task_id: str, source: str | None, ttl: timedelta) -> Instance:
    # Whole seconds: the expiry printed is the one the root's annotation holds.
    now = datetime.now(UTC).replace(microsecond=0)
    return Instance(task_id=task_id, tool=DEFAULT_TOOL, name=InstanceKey(task_id).name,
                    phase=Phase.DEPLOYING, source=source, ttl=ttl, created_at=now,
                    updated_at=now, expires_at=now + ttl)  # fmt: skip


async def deploy(ks: KubeSettings, kubeconfig: str | None, task_id: str, source: str,
                 ttl: timedelta, wait: bool, timeout: float,
                 secrets_for: SecretsFor | None = None) -> dict[str, Any]:  # fmt: skip
    kube = KubeClient(kubeconfig)
    try:
        # The pod stages its own data: its source, and the credentials it needs, in a Secret.
        deployer = KubernetesDeployer(ks, kube, secrets_for=secrets_for)
        inst = _instance(task_id, source, ttl)
        try:
            deployment = await deployer.deploy(inst, None)
            if wait:
                await deployer.wait_started(inst, deployment, timeout)
        except (VisError, ApiException) as exc:
            # Nobody else will ever delete what a failed command made: remove it now.
            reason = str(exc)
            if isinstance(exc, ApiException):
                reason = status_message(exc, scrubber(source_secrets(source)))
            raise DeployError(f"{reason}; {await _clean_up(deployer, inst.name, timeout)}") from exc
        return {
            "task_id": task_id,
            "namespace": ks.namespace,
            "url": deployment.url,
            "expires_at": inst.expires_at.isoformat() if inst.expires_at else None,
            "objects": deployment.handle["objects"],
        }
    finally:
        await kube.close()


async def _clean_up(deployer: KubernetesDeployer, name: str, timeout: float) -> str:
    """Delete what the failed deploy left (only if idds-vis made it); say how that went."""
    try:
        if not await deployer.delete_if_mine(name):
            return "the Deployment in its way is not idds-vis's and was left alone"
        await _wait_gone(deployer, name, timeout)
    except (VisError, ApiException) as exc:
        return f"removing its objects failed too: {exc}"
    return "its objects were removed"


async def _wait_gone(deployer: KubernetesDeployer, name: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # The garbage collector removes the owned objects after the root: wait for all of them.
    while not await deployer.gone(name):
        if loop.time() > deadline:
            raise DeployError(f"{name}'s objects were still there after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def teardown(
    ks: KubeSettings, kubeconfig: str | None, task_id: str, timeout: float
) -> dict[str, Any]:
    kube = KubeClient(kubeconfig)
    try:
        deployer = KubernetesDeployer(ks, kube)
        name = InstanceKey(task_id).name
        await deployer.delete_by_name(name)
        await _wait_gone(deployer, name, timeout)
        return {"task_id": task_id, "namespace": ks.namespace, "name": name, "gone": True}
    finally:
        await kube.close()
