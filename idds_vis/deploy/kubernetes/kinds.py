"""Create, read, delete and list per kind, so the deployer handles every object the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Kind:
    create: Call
    read: Call
    delete: Call
    list: Call  # (namespace, **kwargs)


def kinds(api: client.ApiClient) -> dict[str, Kind]:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    net = client.NetworkingV1Api(api)
    custom = client.CustomObjectsApi(api)
    route = ("route.openshift.io", "v1")

    async def create_route(namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        return await custom.create_namespaced_custom_object(*route, namespace, "routes", body, **kw)

    async def read_route(name: str, namespace: str, **kw: Any) -> Any:
        return await custom.get_namespaced_custom_object(*route, namespace, "routes", name, **kw)

    async def delete_route(name: str, namespace: str, **kw: Any) -> Any:
        return await custom.delete_namespaced_custom_object(*route, namespace, "routes", name, **kw)

    async def list_routes(namespace: str, **kw: Any) -> Any:
        return await custom.list_namespaced_custom_object(*route, namespace, "routes", **kw)

    return {
        "Deployment": Kind(
            apps.create_namespaced_deployment,
            apps.read_namespaced_deployment,
            apps.delete_namespaced_deployment,
            apps.list_namespaced_deployment,
        ),
        "Service": Kind(
            core.create_namespaced_service,
            core.read_namespaced_service,
            core.delete_namespaced_service,
            core.list_namespaced_service,
        ),
        "Secret": Kind(
            core.create_namespaced_secret,
            core.read_namespaced_secret,
            core.delete_namespaced_secret,
            core.list_namespaced_secret,
        ),
        "Ingress": Kind(
            net.create_namespaced_ingress,
            net.read_namespaced_ingress,
            net.delete_namespaced_ingress,
            net.list_namespaced_ingress,
        ),
        "NetworkPolicy": Kind(
            net.create_namespaced_network_policy,
            net.read_namespaced_network_policy,
            net.delete_namespaced_network_policy,
            net.list_namespaced_network_policy,
        ),
        "Route": Kind(create_route, read_route, delete_route, list_routes),
    }
