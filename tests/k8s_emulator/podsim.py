"""What the scheduler and kubelet would report for a Pod, per simulated behaviour.

The statuses and Event reasons/messages follow what kubelet and kube-scheduler emit, so a
client that diagnoses failures from `status.containerStatuses[*].state.waiting.reason`,
`lastState.terminated.reason`, the PodScheduled condition or Events sees the real strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .clock import now
from .selectors import LabelSelector

NODE = "emulator-node"
HOST_IP = "10.0.0.10"


class Behaviour(StrEnum):
    READY = "ready"
    IMAGE_PULL_BACKOFF = "image-pull-backoff"
    UNSCHEDULABLE = "unschedulable"
    OOM = "oom"
    CRASH = "crash"
    NEVER_READY = "never-ready"


@dataclass
class Rule:
    behaviour: Behaviour
    name: str | None = None
    selector: LabelSelector | None = None
    namespace: str | None = None
    image: str | None = None  # matches pods running this image (e.g. a bad new image)


@dataclass
class Behaviours:
    default: Behaviour = Behaviour.READY
    rules: list[Rule] = field(default_factory=list)

    def for_pod(self, meta: dict[str, Any], pod: dict[str, Any]) -> Behaviour:
        """`meta` is the owning Deployment's metadata, or the pod's own if it has no owner."""
        images = {c.get("image") for c in (pod.get("spec") or {}).get("containers") or []}
        for rule in reversed(self.rules):  # the latest matching rule wins
            if rule.image is not None and rule.image not in images:
                continue
            if rule.namespace is not None and rule.namespace != meta.get("namespace"):
                continue
            if rule.name is not None and rule.name != meta.get("name"):
                continue
            if rule.selector is not None and not rule.selector.matches(meta.get("labels")):
                continue
            return rule.behaviour
        return self.default


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: str
    message: str
    component: str  # kubelet or default-scheduler
    field_path: str = ""


@dataclass
class Simulated:
    node: str | None
    status: dict[str, Any]
    events: list[EventSpec]


def _cond(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now(),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return {k: v for k, v in cond.items() if v is not None}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def simulate(pod: dict[str, Any], behaviour: Behaviour, pod_ip: str) -> Simulated:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    name, ns, uid = meta["name"], meta.get("namespace", ""), meta["uid"]
    containers = spec.get("containers") or []
    qos = (pod.get("status") or {}).get("qosClass", "BestEffort")
    base: dict[str, Any] = {"qosClass": qos}
    if behaviour == Behaviour.UNSCHEDULABLE:
        message = (
            "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are "
            "available: 1 No preemption victims found for incoming pod."
        )
        base.update(
            phase="Pending", conditions=[_cond("PodScheduled", False, "Unschedulable", message)]
        )
        return Simulated(
            None, base, [EventSpec("Warning", "FailedScheduling", message, "default-scheduler")]
        )
    events = [
        EventSpec(
            "Normal",
            "Scheduled",
            f"Successfully assigned {ns}/{name} to {NODE}",
            "default-scheduler",
        )
    ]
    started = now()
    statuses: list[dict[str, Any]] = []
    ready_all = behaviour == Behaviour.READY
    for c in containers:
        image, cname = c.get("image", ""), c.get("name", "")
        field = f"spec.containers{{{cname}}}"
        cid = "containerd://" + _digest(uid + cname)
        status: dict[str, Any] = {
            "name": cname,
            "image": image,
            "restartCount": 0,
            "ready": False,
            "started": False,
            "imageID": "",
            "state": {},
            "lastState": {},
        }
        if behaviour == Behaviour.IMAGE_PULL_BACKOFF:
            events += [
                EventSpec("Normal", "Pulling", f'Pulling image "{image}"', "kubelet", field),
                EventSpec(
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: '
                    f'code = NotFound desc = failed to pull and unpack image "{image}": '
                    "not found",
                    "kubelet",
                    field,
                ),
                EventSpec("Warning", "Failed", "Error: ErrImagePull", "kubelet", field),
                EventSpec(
                    "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet", field
                ),
                EventSpec("Warning", "Failed", "Error: ImagePullBackOff", "kubelet", field),
            ]
            status["state"] = {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{image}"',
                }
            }
            statuses.append(status)
            continue
        status["imageID"] = f"{image.split(':')[0]}@sha256:{_digest(image)}"
        status["containerID"] = cid
        events += [
            EventSpec(
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                "kubelet",
                field,
            ),
            EventSpec("Normal", "Created", f"Created container: {cname}", "kubelet", field),
            EventSpec("Normal", "Started", f"Started container {cname}", "kubelet", field),
        ]
        if behaviour in (Behaviour.OOM, Behaviour.CRASH):
            oom = behaviour == Behaviour.OOM
            status["restartCount"] = 1
            status["lastState"] = {
                "terminated": {
                    "exitCode": 137 if oom else 1,
                    "reason": "OOMKilled" if oom else "Error",
                    "startedAt": started,
                    "finishedAt": now(),
                    "containerID": cid,
                }
            }
            status["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={cname} "
                    f"pod={name}_{ns}({uid})",
                }
            }
            events.append(
                EventSpec(
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {cname} in pod {name}_{ns}({uid})",
                    "kubelet",
                    field,
                )
            )
        else:
            status["state"] = {"running": {"startedAt": started}}
            status["started"] = True
            status["ready"] = behaviour == Behaviour.READY
            if behaviour == Behaviour.NEVER_READY:
                events.append(
                    EventSpec(
                        "Warning",
                        "Unhealthy",
                        "Readiness probe failed: HTTP probe failed with statuscode: 503",
                        "kubelet",
                        field,
                    )
                )
        statuses.append(status)
    unready = [s["name"] for s in statuses if not s["ready"]]
    why = f"containers with unready status: [{' '.join(unready)}]"
    base.update(
        phase="Pending" if behaviour == Behaviour.IMAGE_PULL_BACKOFF else "Running",
        hostIP=HOST_IP,
        hostIPs=[{"ip": HOST_IP}],
        podIP=pod_ip,
        podIPs=[{"ip": pod_ip}],
        startTime=started,
        containerStatuses=statuses,
        conditions=[
            _cond("PodReadyToStartContainers", True),
            _cond("Initialized", True),
            _cond(
                "Ready",
                ready_all,
                "" if ready_all else "ContainersNotReady",
                "" if ready_all else why,
            ),
            _cond(
                "ContainersReady",
                ready_all,
                "" if ready_all else "ContainersNotReady",
                "" if ready_all else why,
            ),
            _cond("PodScheduled", True),
        ],
    )
    return Simulated(NODE, base, events)


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
