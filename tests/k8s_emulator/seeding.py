"""Bulk seeding: thousands of objects in the state the API server and controller would leave
them, without paying schema validation and controller reactions per object.

Validation goes by *shape* (the tree of keys and value types): the first object of each shape
runs the full create pipeline (decode, defaulting, semantic checks) and later objects of that
shape only get defaulting, a uid and a resourceVersion. Builders that make many objects of one
kind produce one shape, so 10,000 Deployments cost one schema validation. Values are trusted
beyond that first object (a bad label value in object 5,000 is not caught): seed what a
checked builder made.

Deployments get their Ready pods and the status the controller would write; the Events
kubelet and the controller would record on the way are not made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from . import defaults, envelope, names, rollout, semantic, validation
from .clock import now
from .controller import DeploymentController
from .errors import ApiError, already_exists, invalid
from .podsim import Behaviour, simulate
from .resources import BY_PLURAL, ResourceType, resolve
from .verbs import Api

Shape = tuple[Any, ...] | str
PODS = BY_PLURAL["pods"]


def shape(value: Any) -> Shape:
    """Keys and value types, not values: what decides the outcome of schema decoding."""
    if isinstance(value, dict):
        return ("{", *((k, shape(v)) for k, v in sorted(value.items())))
    if isinstance(value, list):
        return ("[", *(shape(v) for v in value))
    return type(value).__name__


class Seeder:
    def __init__(self, api: Api, controller: DeploymentController) -> None:
        self.api = api
        self.store = api.store
        self.controller = controller
        # Per (plural, shape): whether decoding leaves such an object as it is (no nulls to
        # prune, no unknown fields to drop); if not, those objects are decoded one by one.
        self._checked: dict[tuple[str, Shape], bool] = {}
        self._checked_status: set[Shape] = set()

    def seed(self, objects: Iterable[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
        stamp = now()
        stored = []
        owned = False
        for body in objects:
            rt = resolve(body["kind"])
            ns = (body.get("metadata") or {}).get("namespace") or namespace
            obj = self._admit(rt, ns if rt.namespaced else "", body, stamp)
            pods = []
            if rt.kind == "Deployment":
                pods = self._pods_for(obj, stamp)
            elif rt.kind == "Pod":
                self._make_ready(obj, obj, stamp)
            self.store.load(rt.plural, obj)
            for pod in pods:
                self.store.load("pods", pod)
            owned = owned or bool(obj["metadata"].get("ownerReferences"))
            stored.append(obj)
        if owned:  # a dependent whose owner is missing goes, as after any other write
            self.api.gc.schedule()
        return stored

    def _admit(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], stamp: str
    ) -> dict[str, Any]:
        """`body` as create would store it (before its resourceVersion)."""
        obj = envelope.check(self.store, rt, body, namespace)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        key = (rt.plural, shape(obj))
        if key not in self._checked:
            self.api.create(rt, namespace, obj, dry_run=True)  # raises what create would
            decoded = validation.decode(self.api.version, rt, obj, self.api.field_validation)
            self._checked[key] = decoded.obj == obj
        if not self._checked[key]:
            obj = validation.decode(self.api.version, rt, obj, self.api.field_validation).obj
            meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + names.random_suffix()
            while self.store.get(rt.plural, meta.get("namespace", ""), meta["name"]):
                meta["name"] = meta["generateName"] + names.random_suffix()
        elif self.store.get(rt.plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rt, meta["name"])
        defaults.initial_status(rt, obj)
        defaults.apply(rt, obj, self.api.alloc, self.api.route_domain)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = stamp
        for gone in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(gone, None)
        if rt.has_generation:
            meta["generation"] = 1
        return obj

    def _pods_for(self, dep: dict[str, Any], stamp: str) -> list[dict[str, Any]]:
        """Ready pods for `dep`, and the status the controller would then give `dep`."""
        if self.controller.quota_exceeded:
            raise ValueError("seed makes Ready pods: lift quota_exceeded before seeding")
        h = rollout.template_hash(dep["spec"]["template"])
        pods = []
        for _ in range(dep["spec"].get("replicas", 1)):
            body = DeploymentController.pod_body(dep, h)
            pod = self._admit(PODS, dep["metadata"]["namespace"], body, stamp)
            self._make_ready(pod, dep, stamp)
            pods.append(pod)
        dep["status"] = rollout.status(dep, pods, h, None, stamp)
        return pods

    def _make_ready(self, pod: dict[str, Any], owner: dict[str, Any], stamp: str) -> None:
        """What the controller's simulation leaves on a pod under the `ready` behaviour."""
        behaviour = self.controller.behaviours.for_pod(owner["metadata"], pod)
        if behaviour != Behaviour.READY:
            raise ValueError(
                f"seed makes Ready pods, but {pod['metadata']['name']} would be {behaviour}: "
                "set behaviours after seeding"
            )
        sim = simulate(pod, behaviour, self.controller.next_ip())
        if sim.node:
            pod["spec"]["nodeName"] = sim.node
        pod["status"] = sim.status
        key = shape(pod)
        if key not in self._checked_status:
            # As the controller validates its status writes; and as a pod of this shape.
            checked = validation.decode(self.api.version, PODS, pod, "Strict")
            causes = checked.causes + semantic.validate(PODS, checked.obj)
            if causes:
                raise invalid(PODS, pod["metadata"]["name"], causes)
            if checked.obj != pod:
                name = pod["metadata"]["name"]
                raise ValueError(f"the simulated pod {name} does not decode as it is")
            self._checked_status.add(key)
        self.controller.mark_simulated(pod, behaviour)
