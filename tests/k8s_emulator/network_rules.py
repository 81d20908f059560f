"""422 checks for Services, Ingresses, NetworkPolicies and OpenShift Routes."""

from __future__ import annotations

import ipaddress
from typing import Any

from . import names, podspec
from .errors import Cause, bad_value, duplicate, forbidden, required, unsupported


def service(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    kind = spec.get("type", "ClusterIP")
    types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if kind not in types:
        causes.append(unsupported("spec.type", kind, types))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    if kind == "ExternalName" and not spec.get("externalName"):
        causes.append(required("spec.externalName"))
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            causes.append(
                bad_value("spec.clusterIPs[0]", ip, "must be empty, 'None', or a valid IP address")
            )
    seen: set[str] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        pname = port.get("name", "")
        if len(ports) > 1 and not pname:
            causes.append(required(f"{path}.name"))
        if pname:
            causes += [bad_value(f"{path}.name", pname, e) for e in names.dns1123_label(pname)]
            if pname in seen:
                causes.append(duplicate(f"{path}.name", pname))
            seen.add(pname)
        if "port" not in port:
            causes.append(required(f"{path}.port"))
        causes += podspec.port_number(f"{path}.port", port.get("port"))
        causes += podspec.int_or_name_port(f"{path}.targetPort", port.get("targetPort"))
        if port.get("protocol", "TCP") not in podspec.PROTOCOLS:
            causes.append(unsupported(f"{path}.protocol", port["protocol"], podspec.PROTOCOLS))
        if port.get("nodePort") and kind not in ("NodePort", "LoadBalancer"):
            causes.append(forbidden(f"{path}.nodePort", f"may not be used when `type` is '{kind}'"))
    for key, value in (spec.get("selector") or {}).items():
        causes += [bad_value("spec.selector", key, e) for e in names.qualified_name(key)]
        causes += [bad_value("spec.selector", value, e) for e in names.label_value(value)]
    return causes


def _backend(path: str, backend: dict[str, Any]) -> list[Cause]:
    service = backend.get("service")
    if not service and not backend.get("resource"):
        return [bad_value(path, "", "one backend (service or resource) must be specified")]
    if not service:
        return []
    causes = [
        bad_value(f"{path}.service.name", service.get("name", ""), e)
        for e in names.dns1035_label(service.get("name", ""))
    ]
    port = service.get("port") or {}
    if port.get("name") and port.get("number"):
        causes.append(
            bad_value(f"{path}.service.port", "", "cannot set both port name & port number")
        )
    elif not port.get("name") and not port.get("number"):
        causes.append(required(f"{path}.service.port"))
    return causes + podspec.port_number(f"{path}.service.port.number", port.get("number"))


def ingress(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    if not spec.get("rules") and not spec.get("defaultBackend"):
        causes.append(bad_value("spec", "", "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend"):
        causes += _backend("spec.defaultBackend", spec["defaultBackend"])
    kinds = ["Exact", "ImplementationSpecific", "Prefix"]
    for i, rule in enumerate(spec.get("rules") or []):
        host = rule.get("host", "")
        if host:
            causes += [
                bad_value(f"spec.rules[{i}].host", host, e)
                for e in names.dns1123_subdomain(host.removeprefix("*."))
            ]
        for j, hp in enumerate((rule.get("http") or {}).get("paths") or []):
            path = f"spec.rules[{i}].http.paths[{j}]"
            kind = hp.get("pathType")
            if not kind:
                causes.append(required(f"{path}.pathType"))
            elif kind not in kinds:
                causes.append(unsupported(f"{path}.pathType", kind, kinds))
            if kind in ("Exact", "Prefix") and not str(hp.get("path", "")).startswith("/"):
                causes.append(
                    bad_value(f"{path}.path", hp.get("path", ""), "must be an absolute path")
                )
            causes += _backend(f"{path}.backend", hp.get("backend") or {})
    return causes


def route(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    to = spec.get("to") or {}
    if to.get("kind", "Service") != "Service":
        causes.append(unsupported("spec.to.kind", to.get("kind"), ["Service"]))
    if not to.get("name"):
        causes.append(required("spec.to.name"))
    if spec.get("host"):
        causes += [
            bad_value("spec.host", spec["host"], e) for e in names.dns1123_subdomain(spec["host"])
        ]
    if spec.get("path") and not str(spec["path"]).startswith("/"):
        causes.append(bad_value("spec.path", spec["path"], "path must begin with /"))
    tls = spec.get("tls") or {}
    if tls and tls.get("termination") not in ("edge", "passthrough", "reencrypt"):
        causes.append(
            unsupported(
                "spec.tls.termination", tls.get("termination"), ["edge", "passthrough", "reencrypt"]
            )
        )
    return causes


def _policy_ports(path: str, ports: list[dict[str, Any]]) -> list[Cause]:
    causes: list[Cause] = []
    for i, port in enumerate(ports):
        where = f"{path}.ports[{i}]"
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "SCTP"):
            causes.append(unsupported(f"{where}.protocol", protocol, ["SCTP", "TCP", "UDP"]))
        number = port.get("port")
        if isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(
                bad_value(f"{where}.port", number, "must be between 1 and 65535, inclusive")
            )
        end = port.get("endPort")
        if end is not None and not isinstance(number, int):
            causes.append(
                forbidden(f"{where}.endPort", "may not be specified when `port` is non-numeric")
            )
        elif end is not None and isinstance(number, int) and end < number:
            causes.append(
                bad_value(f"{where}.endPort", end, "must be greater than or equal to `port`")
            )
    return causes


def _peer(path: str, peer: dict[str, Any]) -> list[Cause]:
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if k in peer]
    if not kinds:
        return [Cause("FieldValueRequired", "Required value: must specify a peer", path)]
    if "ipBlock" in peer and len(kinds) > 1:
        return [forbidden(path, "may not specify more than 1 peer type")]
    block = peer.get("ipBlock")
    if block is None:
        return []
    causes: list[Cause] = []
    cidr = block.get("cidr", "")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        why = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        return [bad_value(f"{path}.ipBlock.cidr", cidr, why)]
    for i, text in enumerate(block.get("except") or []):
        where = f"{path}.ipBlock.except[{i}]"
        try:
            sub = ipaddress.ip_network(text, strict=False)
        except ValueError:
            causes.append(bad_value(where, text, "must be a valid CIDR value"))
            continue
        inside = sub.version == net.version and sub.subnet_of(net)  # type: ignore[arg-type]
        if not inside or sub.prefixlen <= net.prefixlen:
            causes.append(bad_value(where, text, "must be a strict subset of `cidr`"))
    return causes


def network_policy(spec: dict[str, Any]) -> list[Cause]:
    """kube-apiserver's ValidateNetworkPolicySpec, the parts a client can get wrong."""
    causes: list[Cause] = []
    types = spec.get("policyTypes") or []
    for i, kind in enumerate(types):
        if kind not in ("Ingress", "Egress"):
            causes.append(unsupported(f"spec.policyTypes[{i}]", kind, ["Egress", "Ingress"]))
    if len(types) > 2:
        causes.append(
            bad_value("spec.policyTypes", types, "may not specify more than two policyTypes")
        )
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            path = f"spec.{direction}[{i}]"
            causes += _policy_ports(path, rule.get("ports") or [])
            for j, peer in enumerate(rule.get(peers) or []):
                causes += _peer(f"{path}.{peers}[{j}]", peer)
    return causes
