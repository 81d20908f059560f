"""Pod state and Events, turned into a failure reason a physicist can read (or None: still fine)."""

from __future__ import annotations

from typing import Any

_WAITING = {
    "ImagePullBackOff": "the UI image cannot be pulled",
    "ErrImagePull": "the UI image cannot be pulled",
    "InvalidImageName": "the UI image name is invalid",
    "CrashLoopBackOff": "the UI keeps crashing at start",
    "CreateContainerConfigError": "the UI container is misconfigured",
}


def pod_failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"no node can run the UI: {cond.get('message') or cond.get('reason')}"
    for cs in status.get("containerStatuses") or []:
        last = ((cs.get("lastState") or {}).get("terminated")) or {}
        if last.get("reason") == "OOMKilled":
            return "the UI ran out of memory (OOMKilled): raise its memory limit"
        waiting = ((cs.get("state") or {}).get("waiting")) or {}
        reason = waiting.get("reason")
        if reason in _WAITING:
            detail = waiting.get("message") or reason
            return f"{_WAITING[reason]} ({reason}: {detail})"
    return None


def event_failure(events: list[dict[str, Any]]) -> str | None:
    for event in reversed(events):  # the newest tells the current story
        reason, message = event.get("reason"), event.get("message") or ""
        if reason == "FailedScheduling":
            return f"no node can run the UI: {message}"
        if reason == "FailedCreate" and "exceeded quota" in message:
            return f"cluster quota exceeded: {message}"
        if reason == "OOMKilling" or "OOMKilled" in message:
            return "the UI ran out of memory (OOMKilled): raise its memory limit"
        if reason in ("Failed", "ErrImagePull") and "image" in message.lower():
            return f"the UI image cannot be pulled: {message}"
        if reason == "BackOff" and "restarting failed container" in message.lower():
            return f"the UI keeps crashing at start: {message}"
    return None


def deployment_failure(dep: dict[str, Any]) -> str | None:
    for cond in (dep.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            message = cond.get("message") or cond.get("reason") or "replica failure"
            if "exceeded quota" in message:
                return f"cluster quota exceeded: {message}"
            return f"the cluster refused to start the UI: {message}"
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False
