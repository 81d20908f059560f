"""What is in a test's namespace, read with the admin's client (not the agent's narrow Role)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client

INSTANCE = "app.kubernetes.io/instance"
HANG_GUARD = 120.0  # seconds; reached only when something is broken
# Each UI's objects, by kind, as the admin lists them.
KINDS = ("Deployment", "ReplicaSet", "Pod", "Secret", "Service", "Ingress", "NetworkPolicy")


class ClusterView:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.net = client.NetworkingV1Api(api)

    def _listers(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "Deployment": self.apps.list_namespaced_deployment,
            "ReplicaSet": self.apps.list_namespaced_replica_set,
            "Pod": self.core.list_namespaced_pod,
            "Secret": self.core.list_namespaced_secret,
            "Service": self.core.list_namespaced_service,
            "Ingress": self.net.list_namespaced_ingress,
            "NetworkPolicy": self.net.list_namespaced_network_policy,
        }

    async def of_instance(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Every object labelled as ``name``'s, by kind (pods and ReplicaSets carry the label
        through the pod template)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for kind, lister in self._listers().items():
            listed = await lister(self.ns, label_selector=f"{INSTANCE}={name}")
            items = self.api.sanitize_for_serialization(listed)["items"]
            if items:
                found[kind] = items
        return found

    async def owned_by(self, uid: str) -> list[str]:
        """``Kind/name`` of every object of the namespace with an ownerReference to ``uid``."""
        owned = []
        for kind, lister in self._listers().items():
            listed = self.api.sanitize_for_serialization(await lister(self.ns))["items"]
            for obj in listed:
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    owned.append(f"{kind}/{obj['metadata']['name']}")
        return owned


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll another process's state (the controllers') until ``check`` holds."""
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not await check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {HANG_GUARD:.0f} s") from None


def owner_uids(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]
