"""Deployment rollout arithmetic and the status the deployment controller reports."""

from __future__ import annotations

import hashlib
from typing import Any

from . import podsim

_HASH_CHARS = "bcdfghjkmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any]) -> str:
    """A stable `pod-template-hash` label value for a pod template."""
    digest = hashlib.sha256(repr(sorted(_flatten(template))).encode()).digest()
    return "".join(_HASH_CHARS[b % len(_HASH_CHARS)] for b in digest[:10])


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _flatten(v, f"{prefix}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, repr(value))]


def _scaled(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * replicas / 100
        return int(-(-exact // 1)) if round_up else int(exact)
    return int(value or 0)


def max_unavailable(spec: dict[str, Any]) -> int:
    """As deploymentutil.MaxUnavailable: percentages round down, surge up, never both 0."""
    replicas = spec.get("replicas", 1)
    strategy = spec.get("strategy") or {}
    if strategy.get("type") != "RollingUpdate" or not replicas:
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    unavailable = _scaled(rolling.get("maxUnavailable"), replicas, False)
    if unavailable == 0 and _scaled(rolling.get("maxSurge"), replicas, True) == 0:
        return 1
    return unavailable


def status(
    dep: dict[str, Any], pods: list[dict[str, Any]], h: str, failure: str | None, stamp: str
) -> dict[str, Any]:
    spec, name = dep["spec"], dep["metadata"]["name"]
    replicas = spec.get("replicas", 1)
    updated = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == h]
    available = sum(podsim.is_ready(p) for p in pods)
    out: dict[str, Any] = {"observedGeneration": dep["metadata"].get("generation", 1)}
    for key, value in (
        ("replicas", len(pods)),
        ("updatedReplicas", len(updated)),
        ("readyReplicas", available),
        ("availableReplicas", available),
        ("unavailableReplicas", max(0, replicas - available)),
    ):
        if value:  # the Go fields are omitempty
            out[key] = value
    rs = f"{name}-{h}"
    enough = available >= replicas - max_unavailable(spec)
    done = len(updated) == replicas == len(pods) and available >= replicas
    wanted = [
        ("Available", enough, "MinimumReplicasAvailable", "Deployment has minimum availability.")
        if enough
        else (
            "Available",
            False,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        ),
        (
            "Progressing",
            True,
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs}" has successfully progressed.',
        )
        if done
        else ("Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.'),
    ]
    if failure:
        wanted.append(("ReplicaFailure", True, "FailedCreate", failure))
    previous = {c["type"]: c for c in (dep.get("status") or {}).get("conditions") or []}
    conditions = []
    for kind, ok, reason, message in wanted:
        was = previous.get(kind, {})
        flag = "True" if ok else "False"
        same = was.get("status") == flag
        unchanged = same and was.get("reason") == reason and was.get("message") == message
        conditions.append(
            {
                "type": kind,
                "status": flag,
                "reason": reason,
                "message": message,
                # Kept unless they change, or every resync would be a new status write.
                "lastUpdateTime": was["lastUpdateTime"] if unchanged else stamp,
                "lastTransitionTime": was["lastTransitionTime"] if same else stamp,
            }
        )
    out["conditions"] = conditions
    return out


def event(
    obj: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
    component: str,
    stamp: str,
    unique: str,
    host: str = "",
    field_path: str = "",
) -> dict[str, Any]:
    """A core/v1 Event about `obj`, as kubelet or a controller records one."""
    meta = obj["metadata"]
    involved = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"],
    }
    if field_path:
        involved["fieldPath"] = field_path
    source = {"component": component, **({"host": host} if host else {})}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{unique}", "namespace": meta["namespace"]},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": source,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host,
    }
