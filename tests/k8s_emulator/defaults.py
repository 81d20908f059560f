"""Server-side defaulting, so that objects read back look like a real cluster's.

Clients that diff desired against actual state trip over these fields on a real cluster, so
the emulator sets the common ones too (the set from pkg/apis/*/v1/defaults.go that matters to
a Deployment/Service/Ingress deployer, not all of it).
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from .resources import ResourceType


class Allocator:
    """Hands out ClusterIPs and NodePorts the way the Service registry does: uniquely."""

    def __init__(self) -> None:
        self._ips = ipaddress.IPv4Network("10.96.0.0/12").hosts()
        next(self._ips)  # 10.96.0.1 belongs to the `kubernetes` Service
        self._node_port = 30000

    def cluster_ip(self) -> str:
        return str(next(self._ips))

    def node_port(self) -> int:
        self._node_port += 1
        return self._node_port


def _container(c: dict[str, Any]) -> None:
    image = str(c.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(c.get(probe), dict):
            p = c[probe]
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                p.setdefault(key, value)
            if isinstance(p.get("httpGet"), dict):
                p["httpGet"].setdefault("scheme", "HTTP")
                p["httpGet"].setdefault("path", "/")


def pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if isinstance(c, dict):
            _container(c)


def _deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def _service(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = alloc.cluster_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
        if spec["type"] in ("NodePort", "LoadBalancer"):
            port.setdefault("nodePort", alloc.node_port())
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if not obj.get("status"):
        obj["status"] = {"loadBalancer": {}}


def _secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _network_policy(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for rule in [*(spec.get("ingress") or []), *(spec.get("egress") or [])]:
        for port in rule.get("ports") or []:
            port.setdefault("protocol", "TCP")


def _route(obj: dict[str, Any], domain: str) -> None:
    spec = obj.setdefault("spec", {})
    meta = obj.get("metadata") or {}
    if not spec.get("host"):
        spec["host"] = f"{meta.get('name')}-{meta.get('namespace')}.{domain}"
    spec.setdefault("wildcardPolicy", "None")
    if isinstance(spec.get("to"), dict):
        spec["to"].setdefault("weight", 100)
    # No router runs here; admit every route the way the default OpenShift router would.
    obj["status"] = {
        "ingress": [
            {
                "host": spec["host"],
                "routerName": "default",
                "wildcardPolicy": "None",
                "conditions": [{"type": "Admitted", "status": "True"}],
            }
        ]
    }


def qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == r["limits"][k]
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def initial_status(rt: ResourceType, obj: dict[str, Any]) -> None:
    """What PrepareForCreate leaves in `status`: clients cannot create objects with status."""
    if rt.kind == "Pod":
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
    elif rt.kind == "ReplicaSet":
        obj["status"] = {"replicas": 0}  # not omitempty in the API: always serialised
    elif rt.status_subresource:
        obj["status"] = {}


def keep_allocations(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    # The Service registry carries allocated values over when an update omits them.
    if rt.kind != "Service":
        return
    o_spec, n_spec = old.get("spec") or {}, new.setdefault("spec", {})
    if not n_spec.get("clusterIP") and o_spec.get("clusterIP"):
        n_spec["clusterIP"] = o_spec["clusterIP"]
        n_spec.setdefault("clusterIPs", o_spec.get("clusterIPs"))
    old_ports = {p.get("port"): p for p in o_spec.get("ports") or []}
    for port in n_spec.get("ports") or []:
        if "nodePort" not in port and old_ports.get(port.get("port"), {}).get("nodePort"):
            port["nodePort"] = old_ports[port["port"]]["nodePort"]


def apply(rt: ResourceType, obj: dict[str, Any], alloc: Allocator, route_domain: str) -> None:
    if rt.kind == "Deployment":
        _deployment(obj)
    elif rt.kind == "ReplicaSet":
        obj.setdefault("spec", {}).setdefault("replicas", 1)
        pod_spec(obj["spec"].setdefault("template", {}).setdefault("spec", {}))
    elif rt.kind == "Pod":
        pod_spec(obj.setdefault("spec", {}))
        obj["spec"].setdefault("serviceAccountName", "default")
        obj["spec"].setdefault("serviceAccount", obj["spec"]["serviceAccountName"])
    elif rt.kind == "Service":
        _service(obj, alloc)
    elif rt.kind == "Secret":
        _secret(obj)
    elif rt.kind == "NetworkPolicy":
        _network_policy(obj)
    elif rt.kind == "Route":
        _route(obj, route_domain)
    elif rt.kind == "Ingress" and not obj.get("status"):
        obj["status"] = {"loadBalancer": {}}
    elif rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
