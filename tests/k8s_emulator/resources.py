"""The resource kinds the emulator serves, and the discovery documents describing them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # Which name rule the real registry applies: "subdomain" (RFC 1123), "label" (RFC 1123
    # label), "dns1035" (Services: must start with a letter) or "path" (RBAC: any path segment).
    name_rule: str = "subdomain"
    status_subresource: bool = False
    # Only some registries maintain metadata.generation; Services/Secrets/ConfigMaps do not.
    has_generation: bool = False
    # Leases and Events may be created by PUT (their strategies allow it); others give 404.
    create_on_update: bool = False
    # False for kinds without an official OpenAPI schema (OpenShift Routes).
    has_schema: bool = True
    categories: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_plural(self) -> str:
        """How error messages name the resource, e.g. `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """How 422 messages name the kind, e.g. `Deployment.apps`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        name_rule="label",
        status_subresource=True,
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        short_names=("po",),
        status_subresource=True,
        has_generation=True,
        categories=("all",),
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "service",
        "Service",
        short_names=("svc",),
        name_rule="dns1035",
        status_subresource=True,
        categories=("all",),
    ),
    ResourceType("", "v1", "secrets", "secret", "Secret"),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "events", "event", "Event", short_names=("ev",), create_on_update=True),
    ResourceType(
        "", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", short_names=("sa",)
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        short_names=("deploy",),
        status_subresource=True,
        has_generation=True,
        categories=("all",),
    ),
    # Served so clients can list and watch them; the controller makes none (pods are owned by
    # their Deployment directly), so lists are empty unless a test creates one.
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        short_names=("rs",),
        status_subresource=True,
        has_generation=True,
        categories=("all",),
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        short_names=("ing",),
        status_subresource=True,
        has_generation=True,
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        short_names=("netpol",),
        has_generation=True,
    ),
    ResourceType(
        "route.openshift.io",
        "v1",
        "routes",
        "route",
        "Route",
        status_subresource=True,
        has_schema=False,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", create_on_update=True),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", name_rule="path"),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        name_rule="path",
    ),
)

BY_PLURAL: dict[str, ResourceType] = {rt.plural: rt for rt in RESOURCES}
BY_KIND: dict[str, ResourceType] = {rt.kind: rt for rt in RESOURCES}
BY_GVR: dict[tuple[str, str, str], ResourceType] = {
    (rt.group, rt.version, rt.plural): rt for rt in RESOURCES
}


def resolve(resource: str) -> ResourceType:
    """Accept `deployments`, `deployments.apps`, a kind (`Deployment`) or a short name."""
    plural = resource.split(".", 1)[0]
    if plural in BY_PLURAL:
        return BY_PLURAL[plural]
    if resource in BY_KIND:
        return BY_KIND[resource]
    for rt in RESOURCES:
        if resource in rt.short_names or resource == rt.singular:
            return rt
    raise KeyError(f"unknown resource {resource!r}")


def groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rt in RESOURCES:
        if rt.group and rt.version not in out.setdefault(rt.group, []):
            out[rt.group].append(rt.version)
    return out


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in groups()[group]]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list() -> dict[str, Any]:
    listed = [api_group(g) for g in groups()]
    for g in listed:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    members = [rt for rt in RESOURCES if rt.group == group and rt.version == version]
    if not members:
        return None
    resources: list[dict[str, Any]] = []
    for rt in members:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ALL_VERBS,
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
