"""422 validation beyond the schema: names, labels, and per-kind rules a real server enforces."""

from __future__ import annotations

import copy
import json
from typing import Any

from . import names, network_rules, podspec
from .errors import Cause, bad_value, forbidden, immutable, required, unsupported
from .resources import ResourceType
from .selectors import selector_from_spec


def _go_map(value: dict[str, Any]) -> str:
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(value.items()))
    return "map[string]string{" + inner + "}"


def metadata(rt: ResourceType, meta: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    name = meta.get("name", "")
    if not name:
        causes.append(
            Cause(
                "FieldValueRequired",
                "Required value: name or generateName is required",
                "metadata.name",
            )
        )
    else:
        rule = names.NAME_RULES[rt.name_rule]
        causes += [bad_value("metadata.name", name, e) for e in rule(name)]
    for key, value in (meta.get("labels") or {}).items():
        causes += [bad_value("metadata.labels", key, e) for e in names.qualified_name(key)]
        causes += [bad_value("metadata.labels", value, e) for e in names.label_value(value)]
    annotations = meta.get("annotations") or {}
    for key in annotations:
        causes += [bad_value("metadata.annotations", key, e) for e in names.qualified_name(key)]
    if sum(len(k) + len(v) for k, v in annotations.items()) > 262144:
        causes.append(
            Cause(
                "FieldValueTooLong",
                "Too long: must have at most 262144 bytes",
                "metadata.annotations",
            )
        )
    refs = meta.get("ownerReferences") or []
    if sum(1 for r in refs if r.get("controller")) > 1:
        causes.append(
            bad_value(
                "metadata.ownerReferences", "", "Only one reference can have Controller set to true"
            )
        )
    for i, ref in enumerate(refs):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(required(f"metadata.ownerReferences[{i}].{key}"))
    for i, fin in enumerate(meta.get("finalizers") or []):
        causes += [
            bad_value(f"metadata.finalizers[{i}]", fin, e) for e in names.qualified_name(fin)
        ]
    return causes


def _deployment(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    selector = spec.get("selector") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(
            bad_value(
                "spec.selector", "v1.LabelSelector{}", "empty selector is invalid for deployment"
            )
        )
    elif not selector_from_spec(selector).matches(labels):
        causes.append(
            bad_value(
                "spec.template.metadata.labels",
                _go_map(labels),
                "`selector` does not match template `labels`",
            )
        )
    if spec.get("replicas", 0) < 0:
        causes.append(
            bad_value("spec.replicas", spec["replicas"], "must be greater than or equal to 0")
        )
    strategy = spec.get("strategy") or {}
    if strategy.get("type") not in (None, "RollingUpdate", "Recreate"):
        causes.append(
            unsupported("spec.strategy.type", strategy["type"], ["Recreate", "RollingUpdate"])
        )
    if strategy.get("type") == "Recreate" and strategy.get("rollingUpdate"):
        causes.append(
            forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
        )
    rolling = strategy.get("rollingUpdate") or {}
    if rolling.get("maxSurge") in (0, "0%") and rolling.get("maxUnavailable") in (0, "0%"):
        causes.append(
            bad_value(
                "spec.strategy.rollingUpdate.maxUnavailable", 0, "may not be 0 when `maxSurge` is 0"
            )
        )
    template_spec = (spec.get("template") or {}).get("spec") or {}
    return causes + podspec.validate("spec.template.spec", template_spec, ["Always"])


def _data_keys(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for field in ("data", "binaryData"):
        for key in obj.get(field) or {}:
            causes += [bad_value(f"{field}[{key}]", key, e) for e in names.config_key(key)]
    size = sum(len(v) for v in (obj.get("data") or {}).values())
    if obj.get("kind") == "Secret" and size * 3 // 4 > 1048576:
        causes.append(
            Cause("FieldValueTooLong", "Too long: must have at most 1048576 bytes", "data")
        )
    if obj.get("kind") == "Secret" and obj.get("type") == "kubernetes.io/tls":
        causes += [
            required(f"data[{k}]")
            for k in ("tls.crt", "tls.key")
            if k not in (obj.get("data") or {})
        ]
    return causes


def validate(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    causes = metadata(rt, obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    if rt.kind == "Deployment":
        causes += _deployment(spec)
    elif rt.kind == "Pod":
        causes += podspec.validate("spec", spec, ["Always", "Never", "OnFailure"])
    elif rt.kind == "Service":
        causes += network_rules.service(spec)
    elif rt.kind == "Ingress":
        causes += network_rules.ingress(spec)
    elif rt.kind == "NetworkPolicy":
        causes += network_rules.network_policy(spec)
    elif rt.kind in ("Secret", "ConfigMap"):
        causes += _data_keys(obj)
    elif rt.kind == "Route":
        causes += network_rules.route(spec)
    elif rt.kind == "RoleBinding":
        ref = obj.get("roleRef") or {}
        if ref.get("kind") not in ("Role", "ClusterRole"):
            causes.append(unsupported("roleRef.kind", ref.get("kind"), ["ClusterRole", "Role"]))
        for i, subject in enumerate(obj.get("subjects") or []):
            if subject.get("kind") not in ("Group", "ServiceAccount", "User"):
                causes.append(
                    unsupported(
                        f"subjects[{i}].kind",
                        subject.get("kind"),
                        ["Group", "ServiceAccount", "User"],
                    )
                )
    return causes


def _without_images(spec: dict[str, Any]) -> str:
    masked = copy.deepcopy(spec)
    for group in ("containers", "initContainers"):
        for c in masked.get(group) or []:
            c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        masked.pop(key, None)
    return json.dumps(masked, sort_keys=True)


def immutability(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    o_spec, n_spec = old.get("spec") or {}, new.get("spec") or {}
    if rt.kind == "Deployment" and o_spec.get("selector") != n_spec.get("selector"):
        causes.append(immutable("spec.selector", json.dumps(n_spec.get("selector"))))
    if (
        rt.kind == "Service"
        and o_spec.get("clusterIP") != n_spec.get("clusterIP")
        and "ExternalName" not in (o_spec.get("type"), n_spec.get("type"))
    ):
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: []string{{"{n_spec.get("clusterIP")}"}}: may not change once set',
                "spec.clusterIPs[0]",
            )
        )
    if rt.kind == "RoleBinding" and old.get("roleRef") != new.get("roleRef"):
        causes.append(bad_value("roleRef", json.dumps(new.get("roleRef")), "cannot change roleRef"))
    if rt.kind in ("Secret", "ConfigMap") and old.get("immutable"):
        if not new.get("immutable"):
            causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        for field in ("data", "binaryData"):
            if old.get(field) != new.get(field):
                causes.append(forbidden(field, "field is immutable when `immutable` is set"))
    if rt.kind == "Pod" and _without_images(o_spec) != _without_images(n_spec):
        causes.append(
            forbidden(
                "spec",
                "pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*]"
                ".image`,`spec.activeDeadlineSeconds`,`spec."
                "tolerations` (only additions to existing tolerations)"
                ",`spec.terminationGracePeriodSeconds` (allow it to be "
                "set to 1 if it was previously negative)",
            )
        )
    return causes
