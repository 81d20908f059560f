"""Pod state and Events, turned into a failure reason a physicist can read (or None: still fine).

Waiting for a node is not a failure: with a cluster autoscaler "0/N nodes are available" is
usually transient, so it is a *pending* reason, reported only if the start deadline passes.
"""

from __future__ import annotations

import re
from typing import Any

# The kubelet's message while a Secret the pod reads does not exist yet; it retries, and the
# deployer creates the Secret right after the Deployment.
_SECRET_MISSING = re.compile(r'secret "[^"]*" not found')

_WAITING = {
    "ImagePullBackOff": "the UI image cannot be pulled",
    "ErrImagePull": "the UI image cannot be pulled",
    "InvalidImageName": "the UI image name is invalid",
    "CrashLoopBackOff": "the UI keeps crashing at start",
    "CreateContainerConfigError": "the UI container is misconfigured",
}


def pending_reason(pod: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """Why the pod still waits, when that may pass by itself (no node yet, Secret not yet)."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = ((cs.get("state") or {}).get("waiting")) or {}
        message = waiting.get("message") or ""
        config_error = waiting.get("reason") == "CreateContainerConfigError"
        if config_error and _SECRET_MISSING.search(message):
            return f"the UI waits for its Secret ({message})"
    if (pod.get("spec") or {}).get("nodeName"):
        return None
    for event in reversed(events):
        if event.get("reason") == "FailedScheduling":
            return f"no node can run the UI: {event.get('message') or 'FailedScheduling'}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"no node can run the UI: {cond.get('message') or cond.get('reason')}"
    return None


def pod_failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        last = ((cs.get("lastState") or {}).get("terminated")) or {}
        if last.get("reason") == "OOMKilled":
            return "the UI ran out of memory (OOMKilled): raise its memory limit"
        waiting = ((cs.get("state") or {}).get("waiting")) or {}
        reason = waiting.get("reason")
        if reason in _WAITING and not _SECRET_MISSING.search(waiting.get("message") or ""):
            detail = waiting.get("message") or reason
            return f"{_WAITING[reason]} ({reason}: {detail})"
    return None


def event_failure(events: list[dict[str, Any]]) -> str | None:
    for event in reversed(events):  # the newest tells the current story
        reason, message = event.get("reason"), event.get("message") or ""
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
