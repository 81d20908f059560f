"""A Deployment controller plus scheduler/kubelet stand-in: Deployments get Pods, Pods get
statuses and Events according to the behaviour tests choose.

Pods are owned by their Deployment directly (no ReplicaSets). Rolling updates follow the
default RollingUpdate arithmetic for the common case: the new pod is created first and the
old ones are deleted once the new ones are Ready; `Recreate` deletes old pods first.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import time
from typing import Any

from . import podsim, rollout, validation
from .clock import now
from .errors import ApiError
from .podsim import Behaviour, Behaviours, Rule
from .resources import BY_PLURAL
from .selectors import parse_label_selector
from .store import Change
from .verbs import Api

log = logging.getLogger(__name__)
DEPLOYMENTS, PODS, EVENTS = BY_PLURAL["deployments"], BY_PLURAL["pods"], BY_PLURAL["events"]


class DeploymentController:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.store = api.store
        self.behaviours = Behaviours()
        self.quota_exceeded = False
        self.sim_delay = 0.0
        self.errors: list[BaseException] = []
        self._queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._pending: set[tuple[str, str, str]] = set()
        self._simulated: dict[str, Behaviour] = {}
        self._ips = ipaddress.IPv4Network("10.244.0.0/16").hosts()
        self._task: asyncio.Task[None] | None = None
        self.store.subscribe(self._on_change)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="k8s-emulator-controller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _enqueue(self, item: tuple[str, str, str]) -> None:
        if item not in self._pending:
            self._pending.add(item)
            self._queue.put_nowait(item)

    def _on_change(self, change: Change) -> None:
        if change.seeded:  # loaded with its pods and statuses as this controller leaves them
            return
        meta = change.obj["metadata"]
        if change.plural == "deployments":
            self._enqueue(("deployments", change.namespace, meta["name"]))
        elif change.plural == "pods":
            owner = self._owner_ref(change.obj)
            if owner:
                self._enqueue(("deployments", change.namespace, owner["name"]))
            if change.type == "DELETED":
                self._simulated.pop(meta["uid"], None)
            else:
                self._enqueue(("pods", change.namespace, meta["name"]))

    def resync(self) -> None:
        for plural in ("deployments", "pods"):
            for obj in self.store.items(plural):
                self._enqueue((plural, obj["metadata"]["namespace"], obj["metadata"]["name"]))

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            self._pending.discard(item)
            try:
                if item[0] == "pods":
                    await self._simulate(item[1], item[2])
                else:
                    self._reconcile(item[1], item[2])
            except ApiError as err:  # e.g. the namespace went away meanwhile
                log.debug("controller: %s %s", item, err.message)
            except Exception as err:
                log.exception("controller failed on %s", item)
                self.errors.append(err)

    @staticmethod
    def _owner_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                return dict(ref)
        return None

    def _behaviour_for_pod(self, pod: dict[str, Any]) -> Behaviour:
        owner = self._owner_ref(pod)
        dep = owner and self.store.get("deployments", pod["metadata"]["namespace"], owner["name"])
        return self.behaviours.for_pod((dep or pod)["metadata"], pod)

    async def _simulate(self, namespace: str, name: str) -> None:
        pod = self.store.get("pods", namespace, name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        wanted = self._behaviour_for_pod(pod)
        if self._simulated.get(pod["metadata"]["uid"]) == wanted:
            return
        if self.sim_delay:
            await asyncio.sleep(self.sim_delay)
            pod = self.store.get("pods", namespace, name)
            if pod is None:
                return
        pod = copy.deepcopy(pod)
        sim = podsim.simulate(pod, wanted, self.next_ip())
        if sim.node:
            pod["spec"]["nodeName"] = sim.node  # the binding subresource's effect
        pod["status"] = sim.status
        # Validated like any write, so a malformed simulated status fails loudly here.
        pod = validation.decode(self.api.version, PODS, pod, "Strict").obj
        stored = self.store.put("pods", pod)
        self.mark_simulated(pod, wanted)
        for spec in sim.events:
            host = podsim.NODE if spec.component == "kubelet" else ""
            self.emit(
                stored, spec.type, spec.reason, spec.message, spec.component, host, spec.field_path
            )

    def next_ip(self) -> str:
        return str(next(self._ips))

    def mark_simulated(self, pod: dict[str, Any], behaviour: Behaviour) -> None:
        """`pod` already shows `behaviour`: a resync need not simulate it again."""
        self._simulated[pod["metadata"]["uid"]] = behaviour

    def emit(
        self,
        obj: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        component: str,
        host: str = "",
        field_path: str = "",
    ) -> None:
        namespace = obj["metadata"]["namespace"]
        unique = f"{time.time_ns():x}"
        while self.store.get("events", namespace, f"{obj['metadata']['name']}.{unique}"):
            unique += "0"
        body = rollout.event(obj, kind, reason, message, component, now(), unique, host, field_path)
        self.api.create(EVENTS, namespace, body)

    def _owned_pods(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        uid = dep["metadata"]["uid"]
        return [
            p
            for p in self.store.items("pods", dep["metadata"]["namespace"])
            if (self._owner_ref(p) or {}).get("uid") == uid
            and not p["metadata"].get("deletionTimestamp")
        ]

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        self.api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _reconcile(self, namespace: str, name: str) -> None:
        dep = self.store.get("deployments", namespace, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return
        spec = dep["spec"]
        replicas, h = spec.get("replicas", 1), rollout.template_hash(spec["template"])
        pods = self._owned_pods(dep)
        new = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == h]
        old = [p for p in pods if p not in new]
        if spec.get("strategy", {}).get("type") == "Recreate":
            for pod in old:
                self._delete_pod(pod)
            old = []
        failure = None
        if len(new) < replicas:
            if self.quota_exceeded:
                failure = (
                    f'pods "{name}-{h}-{h[:5]}" is forbidden: exceeded quota: '
                    "compute-resources, requested: pods=1, used: pods=10, limited: "
                    "pods=10"
                )
            else:
                for _ in range(replicas - len(new)):
                    self._create_pod(dep, h)
                self.emit(
                    dep,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled up replica set {name}-{h} from {len(new)} to {replicas}",
                    "deployment-controller",
                )
        for pod in sorted(new, key=podsim.is_ready)[: max(0, len(new) - replicas)]:
            self._delete_pod(pod)
        if old and sum(podsim.is_ready(p) for p in new) >= replicas:
            for pod in old:
                self._delete_pod(pod)
        self._write_status(dep, h, failure)

    def _create_pod(self, dep: dict[str, Any], h: str) -> None:
        self.api.create(PODS, dep["metadata"]["namespace"], self.pod_body(dep, h))

    @staticmethod
    def pod_body(dep: dict[str, Any], h: str) -> dict[str, Any]:
        """The Pod this controller creates for `dep` (template hash `h`), as posted."""
        meta, template = dep["metadata"], dep["spec"]["template"]
        tmeta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "spec": copy.deepcopy(template["spec"]),
            "metadata": {
                "generateName": f"{meta['name']}-{h}-",
                "namespace": meta["namespace"],
                "labels": {**(tmeta.get("labels") or {}), "pod-template-hash": h},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
        }
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        return pod

    def _write_status(self, dep: dict[str, Any], h: str, failure: str | None) -> None:
        previous = {c["type"] for c in (dep.get("status") or {}).get("conditions") or []}
        if failure and "ReplicaFailure" not in previous:
            self.emit(
                dep,
                "Warning",
                "FailedCreate",
                f"Error creating: {failure}",
                "deployment-controller",
            )
        status = rollout.status(dep, self._owned_pods(dep), h, failure, now())
        if status != dep.get("status"):
            body = copy.deepcopy(dep)
            body["status"] = status
            meta = dep["metadata"]
            self.api.update(
                DEPLOYMENTS,
                meta["namespace"],
                meta["name"],
                body,
                subresource="status",
                system=True,
            )

    def set_behaviour(
        self,
        behaviour: str,
        *,
        name: str | None = None,
        selector: str | None = None,
        namespace: str | None = None,
        image: str | None = None,
    ) -> None:
        parsed = parse_label_selector(selector) if selector is not None else None
        self.behaviours.rules.append(Rule(Behaviour(behaviour), name, parsed, namespace, image))
        self.resync()
