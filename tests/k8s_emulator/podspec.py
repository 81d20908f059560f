"""422 checks of a PodSpec, as pkg/apis/core/validation does them (the commonly hit subset)."""

from __future__ import annotations

from typing import Any

from . import names
from .errors import Cause, bad_value, duplicate, not_found_cause, required, unsupported

PROTOCOLS = ["SCTP", "TCP", "UDP"]


def port_number(path: str, value: Any) -> list[Cause]:
    if isinstance(value, int) and not 1 <= value <= 65535:
        return [bad_value(path, value, "must be between 1 and 65535, inclusive")]
    return []


def int_or_name_port(path: str, value: Any) -> list[Cause]:
    if isinstance(value, str):
        return [bad_value(path, value, e) for e in names.port_name(value)]
    return port_number(path, value)


def _env(path: str, env: list[dict[str, Any]]) -> list[Cause]:
    causes: list[Cause] = []
    for i, var in enumerate(env):
        name = var.get("name", "")
        if not name:
            causes.append(required(f"{path}[{i}].name"))
        elif "=" in name or not name.isprintable() or not name.isascii():
            causes.append(
                bad_value(
                    f"{path}[{i}].name",
                    name,
                    "a valid environment variable name must consist only of "
                    "printable ASCII characters other than '='",
                )
            )
    return causes


def _container(
    path: str, c: dict[str, Any], volumes: set[str], port_names: set[str]
) -> list[Cause]:
    causes: list[Cause] = []
    name = c.get("name", "")
    causes += (
        [bad_value(f"{path}.name", name, e) for e in names.dns1123_label(name)]
        if name
        else [required(f"{path}.name")]
    )
    image = c.get("image", "")
    if not image:
        causes.append(required(f"{path}.image"))
    elif image != image.strip():
        causes.append(
            bad_value(f"{path}.image", image, "must not have leading or trailing whitespace")
        )
    for j, port in enumerate(c.get("ports") or []):
        ppath = f"{path}.ports[{j}]"
        causes += port_number(f"{ppath}.containerPort", port.get("containerPort"))
        if port.get("hostPort"):
            causes += port_number(f"{ppath}.hostPort", port["hostPort"])
        if port.get("name"):
            causes += [
                bad_value(f"{ppath}.name", port["name"], e) for e in names.port_name(port["name"])
            ]
            if port["name"] in port_names:
                causes.append(duplicate(f"{ppath}.name", port["name"]))
            port_names.add(port["name"])
        if port.get("protocol", "TCP") not in PROTOCOLS:
            causes.append(unsupported(f"{ppath}.protocol", port["protocol"], PROTOCOLS))
    causes += _env(f"{path}.env", c.get("env") or [])
    for j, mount in enumerate(c.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            causes.append(not_found_cause(f"{path}.volumeMounts[{j}].name", mount.get("name")))
        if not mount.get("mountPath"):
            causes.append(required(f"{path}.volumeMounts[{j}].mountPath"))
    policy = c.get("imagePullPolicy")
    if policy and policy not in ("Always", "IfNotPresent", "Never"):
        causes.append(
            unsupported(f"{path}.imagePullPolicy", policy, ["Always", "IfNotPresent", "Never"])
        )
    return causes


def validate(path: str, spec: dict[str, Any], restart_policies: list[str]) -> list[Cause]:
    causes: list[Cause] = []
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name", "")
        causes += [
            bad_value(f"{path}.volumes[{i}].name", vname, e) for e in names.dns1123_label(vname)
        ]
        if vname in volumes:
            causes.append(duplicate(f"{path}.volumes[{i}].name", vname))
        volumes.add(vname)
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    seen: set[str] = set()
    port_names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            causes += _container(f"{path}.{group}[{i}]", c, volumes, port_names)
            if c.get("name") in seen:
                causes.append(duplicate(f"{path}.{group}[{i}].name", c.get("name")))
            seen.add(c.get("name", ""))
    policy = spec.get("restartPolicy")
    if policy and policy not in restart_policies:
        causes.append(unsupported(f"{path}.restartPolicy", policy, restart_policies))
    dns = spec.get("dnsPolicy")
    dns_policies = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
    if dns and dns not in dns_policies:
        causes.append(unsupported(f"{path}.dnsPolicy", dns, dns_policies))
    sa = spec.get("serviceAccountName")
    if sa:
        causes += [
            bad_value(f"{path}.serviceAccountName", sa, e) for e in names.dns1123_subdomain(sa)
        ]
    return causes
