"""Standby UI pods on Kubernetes (issue 18, EXPERIMENTAL): the warm pool of the k8s deployer.

Per tool, ``size`` bare Pods of the current image wait in the UIs' namespace, started in the
UI's member mode (MLflow imported, listening, no data). A request claims one and the pod is
from then on that instance's UI, for its whole life:

- **Ownership.** Idle pods are owned by a *standby root*, a ConfigMap
  ``idds-vis-standby-<tool>`` (deleting it removes every idle pod and its Secret: nothing is
  left behind at shutdown). Each pod's hand-over secret is in a Secret of the pod's name,
  owned by the pod (it goes with it), read by the pod through ``secretKeyRef``: never in its
  args, labels or the agent's logs.
- **The claim** is one JSON merge patch of the pod carrying the ``resourceVersion`` the agent
  listed (optimistic concurrency: of two agents racing for a pod one wins, the other gets 409
  and its request starts cold). It gives the pod the instance's labels (so the instance's
  Service and NetworkPolicy select it) and replaces its owner reference by one to the
  instance's root Deployment (``controller: false``, so neither the ReplicaSet controller
  adopts it nor the Deployment controller counts it; ``blockOwnerDeletion`` as every
  dependent has). GC, the reaper and reconcile then work as for a cold UI: deleting the root
  deletes the pod, and the pod's Secret with it.
- **No second pod.** The instance's Deployment is created with ``replicas: 0`` when a standby
  pod is there to claim: it is still the root (owner of the Service, Secret, exposure, policy
  and now the pod) and its template says what a cold start would run. If the claim or the
  hand-over fails, the Deployment is scaled to 1: a cold start.
- **The hand-over** is one authenticated call to the pod over the pod network (its secret in
  ``X-Idds-Vis-Pool-Secret``) carrying the source, the credentials its staging needs, the
  prefix and the allowed hosts; the pod stages the source itself under the source policy and
  address guard, as ``serve-ui`` does (``ui/pod_member.py``, the pod's command). The call is
  injectable (``HandOver``) for tests without a pod network.
- **Recycled** on age (``max_age``, from the pod's creationTimestamp) and on version change:
  each pod is labelled with a hash of its spec (image, args, resources) and the agent's
  version; a pod with another label is deleted at the next refill, never claimed.
- **Found again.** Everything is in the cluster: a restarted agent lists the standby pods by
  label (idle ones of the current version are the pool), and a claimed pod is one of its
  root's objects (``claimed_ready`` for ``running()``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.settings import UI_PORT, KubeSettings
from idds_vis.deploy.pool import (
    HANDOVER_PATH,
    SECRET_ENV,
    SECRET_HEADER,
    NoObserver,
    PoolObserver,
)
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Instance

log = logging.getLogger(__name__)

Obj = dict[str, Any]
COMPONENT = "app.kubernetes.io/component"
STANDBY = "standby"
VERSION_LABEL = "idds-vis/standby-version"
CLAIMED_LABEL = "idds-vis/from-standby"
CLAIMED_BY = "idds-vis/claimed-by"
MERGE_PATCH = "application/merge-patch+json"
MEMBER_COMMAND = ("python", "-m", "idds_vis.ui.pod_member")
CHECK_EVERY = 300.0  # seconds between looks at the pods' age when nothing else happens

# (pod as listed, the body to hand over, its secret) -> None, DeployError if it refused.
HandOver = Callable[[Obj, Obj, str], Awaitable[None]]


def root_name(tool: str) -> str:
    return f"idds-vis-standby-{objects.label_value(tool).lower().replace('_', '-')}"


def _selector(tool: str) -> str:
    return (f"app.kubernetes.io/managed-by={objects.MANAGED_BY},{COMPONENT}={STANDBY},"
            f"app.kubernetes.io/name={objects.label_value(tool)}")  # fmt: skip


def claimed_selector() -> str:
    return f"app.kubernetes.io/managed-by={objects.MANAGED_BY},{CLAIMED_LABEL}=true"


def standby_root(ks: KubeSettings, tool: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": root_name(tool),
            "namespace": ks.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": objects.MANAGED_BY,
                "app.kubernetes.io/part-of": "idds-vis",
                "app.kubernetes.io/name": objects.label_value(tool),
                COMPONENT: "standby-root",
            },
        },
        "data": {"purpose": "owns the idle standby UI pods of this tool (issue 18)"},
    }


def _owner(obj: Obj, *, block: bool) -> Obj:
    ref: Obj = {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


def pod_spec(ks: KubeSettings, pod_name: str) -> Obj:
    """The standby pod's spec: the cold UI's container (``objects.deployment``), started in
    member mode (``ui/pod_member.py``) instead of with a source, with the hand-over secret
    from the pod's Secret and TCP probes (the member answers 503 to HTTP until its hand-over)."""
    args = [
        "--host", "0.0.0.0",
        "--port", str(UI_PORT),
        "--allowed-host", ks.public_host,
        "--cors-origin", f"{ks.scheme}://{ks.public_host}",
        "--workdir", "/data/ui",
        "--max-bytes", str(ks.max_bytes),
        "--max-files", str(ks.max_files),
    ]  # fmt: skip
    if ks.web_url:
        # MLflow's allowed hosts are fixed when its app is built, before the pod knows its
        # instance: the Service hosts of this namespace (the proxy's and the probe's Host).
        args += ["--allowed-host", f"*.{ks.namespace}.svc"]
    container: Obj = {
        "name": "ui",
        "image": ks.image,
        "imagePullPolicy": "IfNotPresent",
        # The UI image's interpreter in member mode (ui/pod_member.py), not its entrypoint.
        "command": list(MEMBER_COMMAND),
        "args": args,
        "ports": [{"name": "http", "containerPort": UI_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "HOME", "value": "/tmp"},
            {
                "name": SECRET_ENV,
                "valueFrom": {"secretKeyRef": {"name": pod_name, "key": SECRET_ENV}},
            },
        ],
        **objects.ui_container_limits(ks, {"tcpSocket": {"port": "http"}}),
    }
    template = objects.deployment(_placeholder(), ks, "", None, False)["spec"]["template"]["spec"]
    return {**template, "containers": [container], "restartPolicy": "Always"}


def _placeholder() -> Instance:
    from datetime import UTC, timedelta

    from idds_vis.domain.phases import Phase

    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return Instance(task_id="standby", tool="mlflow", name="standby", phase=Phase.DEPLOYING,
                    source="", ttl=timedelta(0), created_at=epoch, updated_at=epoch)  # fmt: skip


def pod_version(ks: KubeSettings, agent_version: str) -> str:
    """A label value that changes with the pod's image, args, resources, or the agent's version."""
    spec = pod_spec(ks, "x")
    blob = json.dumps([spec, agent_version], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


def standby_pod(ks: KubeSettings, tool: str, name: str, version: str, root: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ks.namespace,
            "labels": {
                "app.kubernetes.io/name": objects.label_value(tool),
                COMPONENT: STANDBY,
                "app.kubernetes.io/managed-by": objects.MANAGED_BY,
                "app.kubernetes.io/part-of": "idds-vis",
                VERSION_LABEL: version,
            },
            "ownerReferences": [_owner(root, block=False)],
        },
        "spec": pod_spec(ks, name),
    }


def pod_secret(ks: KubeSettings, pod: Obj, value: str) -> Obj:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": meta["name"],
            "namespace": ks.namespace,
            "labels": {k: v for k, v in meta["labels"].items() if k != VERSION_LABEL},
            # Owned by its pod (no blockOwnerDeletion: that would need pods/finalizers).
            "ownerReferences": [_owner({**pod, "kind": "Pod"}, block=False)],
        },
        "stringData": {SECRET_ENV: value},
    }


def standby_policy(ks: KubeSettings, tool: str, root: Obj) -> Obj:
    """Idle standby pods: reachable by the agent's pods only (the hand-over), and the egress of
    a UI (the claimed pod stages its source; the instance's own policy selects it then too)."""
    agent_ns = ks.agent_namespace or ks.namespace
    policy = objects.network_policy(_placeholder(), ks, root)
    policy["metadata"] = {
        "name": root_name(tool),
        "namespace": ks.namespace,
        "labels": dict(standby_root(ks, tool)["metadata"]["labels"]),
        "ownerReferences": [_owner(root, block=False)],
    }
    policy["spec"]["podSelector"] = {"matchLabels": {
        COMPONENT: STANDBY, "app.kubernetes.io/name": objects.label_value(tool)}}  # fmt: skip
    policy["spec"]["ingress"] = [{
        "from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": agent_ns}},
            "podSelector": {"matchLabels": dict(ks.agent_pod_labels)},
        }],
        "ports": [{"port": UI_PORT, "protocol": "TCP"}],
    }]  # fmt: skip
    return policy


def claim_patch(pod: Obj, instance: Instance, root: Obj) -> Obj:
    """The merge patch that makes ``pod`` the instance's: guarded by its resourceVersion."""
    labels: dict[str, str | None] = dict(objects.labels(instance))
    labels[VERSION_LABEL] = None
    labels[CLAIMED_LABEL] = "true"
    ref = {**_owner(root, block=True), "controller": False}
    return {
        "metadata": {
            "resourceVersion": pod["metadata"]["resourceVersion"],
            "labels": labels,
            "annotations": {CLAIMED_BY: instance.name},
            "ownerReferences": [ref],
        }
    }


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _created(pod: Obj) -> float:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Claimed:
    pod: Obj  # as patched
    secret: str

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])


async def post_hand_over(pod: Obj, body: Obj, secret: str, timeout: float = 120.0) -> None:
    """The hand-over over the pod network: ``POST http://<pod IP>:<port>/.idds-vis/handover``."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise DeployError("the standby pod has no IP yet")
    url = f"http://{ip}:{UI_PORT}{HANDOVER_PATH}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=body, headers={SECRET_HEADER: secret}) as resp,
        ):
            text = (await resp.text())[:300]
            if resp.status != 200:
                raise DeployError(
                    f"the standby pod refused its hand-over (HTTP {resp.status}): {text.strip()}"
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeployError(f"the standby pod did not take its hand-over: {exc}") from exc


class StandbyPods:
    """The standby pods of one tool in ``ks.namespace``."""

    def __init__(
        self,
        ks: KubeSettings,
        kube: KubeClient,
        *,
        size: int,
        max_age: float,
        tool: str = "mlflow",
        agent_version: str = "",
        hand_over: HandOver = post_hand_over,
        observer: PoolObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ks = ks
        self.kube = kube
        self.size = size
        self.max_age = max_age
        self.tool = tool
        self.version = pod_version(ks, agent_version)
        if hand_over is post_hand_over:  # staging happens inside the call: a UI's start time
            hand_over = functools.partial(post_hand_over, timeout=float(ks.start_seconds))
        self.hand_over_call = hand_over
        self.observer = observer or NoObserver()
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refilled = asyncio.Condition()
        self._lock = asyncio.Lock()
        self.refills = 0  # completed refill passes (tests wait on it)

    async def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(await self.kube.api())

    # -- the pool -----------------------------------------------------------------------------
    async def listed(self) -> list[Obj]:
        core = await self._core()
        found = await self.kube.call(
            core.list_namespaced_pod, self.ks.namespace, label_selector=_selector(self.tool)
        )
        items: list[Obj] = self.kube.to_dict(found)["items"]
        return items

    def usable(self, pod: Obj, now: float) -> bool:
        meta = pod["metadata"]
        return (
            not meta.get("deletionTimestamp")
            and (meta.get("labels") or {}).get(VERSION_LABEL) == self.version
            and now - _created(pod) < self.max_age
        )

    async def idle(self) -> list[Obj]:
        """Idle pods that may be claimed now: current version, young enough, Ready."""
        now = self.clock()
        return [p for p in await self.listed() if self.usable(p, now) and _ready(p)]

    async def refill(self) -> None:
        """One pass: delete stale pods (version, age), create pods up to ``size`` (one pass at
        a time: two would both count the same pods and overshoot)."""
        async with self._lock:
            await self._refill()
        async with self._refilled:
            self.refills += 1
            self._refilled.notify_all()

    async def _refill(self) -> None:
        root = await self._root()
        core = await self._core()
        now = self.clock()
        keep = 0
        for pod in await self.listed():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if self.usable(pod, now):
                keep += 1
                continue
            await self._delete_pod(pod["metadata"]["name"])
        self.observer.pool_size(self.tool, keep)
        for _ in range(max(0, self.size - keep)):
            t0 = time.monotonic()
            name = f"{root_name(self.tool)}-{uuid.uuid4().hex[:10]}"
            body = standby_pod(self.ks, self.tool, name, self.version, root)
            made = await self.kube.call(core.create_namespaced_pod, self.ks.namespace, body)
            pod = self.kube.to_dict(made)
            secret = pod_secret(self.ks, pod, secrets.token_urlsafe(32))
            try:
                await self.kube.call(core.create_namespaced_secret, self.ks.namespace, secret)
            except BaseException:
                await self._delete_pod(name)  # it could never start without its secret
                raise
            keep += 1
            self.observer.pool_refilled(self.tool, time.monotonic() - t0)
            self.observer.pool_size(self.tool, keep)

    async def wait_refills(self, count: int) -> None:
        """Until ``count`` refill passes completed (tests: no polling)."""
        async with self._refilled:
            await self._refilled.wait_for(lambda: self.refills >= count)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._keep_full())

    async def _keep_full(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                await self.refill()
                backoff = 1.0
                wait = min(CHECK_EVERY, max(1.0, self.max_age))
            except (ApiException, DeployError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("the %s standby pods could not be refilled: %s", self.tool,
                            getattr(exc, "reason", None) or exc)  # fmt: skip
                wait, backoff = backoff, min(backoff * 2, 60.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def close(self) -> None:
        """Stop refilling and delete the standby root: the garbage collector removes every
        idle pod, its Secret and the standby policy (claimed pods are their roots'). Only an
        agent that kept the pool does this (``start``: the reconciler's, so the leader of
        several replicas): the others only claimed from it, and leave it to the leader."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        core = await self._core()
        with contextlib.suppress(ApiException):
            # Belt and braces for a collector that lags: the idle pods go now.
            for pod in await self.listed():
                await self._delete_pod(pod["metadata"]["name"])
        try:
            await self.kube.call(
                core.delete_namespaced_config_map, root_name(self.tool), self.ks.namespace,
                propagation_policy="Background",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _delete_pod(self, name: str) -> None:
        core = await self._core()
        try:
            await self.kube.call(
                core.delete_namespaced_pod, name, self.ks.namespace,
                propagation_policy="Background",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _root(self) -> Obj:
        """The standby root and its NetworkPolicy: created, or read back."""
        core = await self._core()
        ns, name = self.ks.namespace, root_name(self.tool)
        body = standby_root(self.ks, self.tool)
        found: Any = None
        try:
            made = await self.kube.call(core.create_namespaced_config_map, ns, body)
            root = self.kube.to_dict(made)
        except ApiException as exc:
            if exc.status != 409:
                raise
            found = await self.kube.call(core.read_namespaced_config_map, name, ns)
            root = self.kube.to_dict(found)
        if found is not None:
            labels = (root.get("metadata") or {}).get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") != objects.MANAGED_BY:
                raise DeployError(f"ConfigMap {ns}/{name} exists and is not managed by idds-vis")
            if root["metadata"].get("deletionTimestamp"):
                raise DeployError(f"ConfigMap {ns}/{name} is being deleted; refill later")
        root.setdefault("kind", "ConfigMap")
        root.setdefault("apiVersion", "v1")
        net = client.NetworkingV1Api(await self.kube.api())
        try:
            await self.kube.call(net.create_namespaced_network_policy, ns,
                                 standby_policy(self.ks, self.tool, root))  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise
        return root

    # -- a request ----------------------------------------------------------------------------
    async def claim(
        self, instance: Instance, root: Obj, listed: list[Obj] | None = None
    ) -> Claimed | None:
        """Claim an idle pod for ``instance`` (owned by ``root`` from now on); None: start cold
        (no idle pod, or another agent claimed the one this one listed: 409). ``listed``: the
        idle pods as the caller just listed them (None: list them now)."""
        candidates = await self.idle() if listed is None else listed
        self._wake.set()  # refill behind this request
        if not candidates:
            self._miss()
            return None
        pod = min(candidates, key=_created)
        core = await self._core()
        name = pod["metadata"]["name"]
        try:
            patched = self.kube.to_dict(await self.kube.call(
                core.patch_namespaced_pod, name, self.ks.namespace,
                claim_patch(pod, instance, root), _content_type=MERGE_PATCH,
            ))  # fmt: skip
        except ApiException as exc:
            if exc.status in (404, 409):  # claimed (or deleted) by someone else first
                log.info("standby pod %s was taken first (HTTP %s): %s starts cold",
                         name, exc.status, instance.name)  # fmt: skip
                self._miss()
                return None
            raise
        secret = await self._secret_of(name)
        if secret is None:
            await self._delete_pod(name)  # claimed but unusable: it goes, the request is cold
            self._miss()
            return None
        self.hits += 1
        self.observer.pool_hit(self.tool)
        return Claimed(patched, secret)

    def miss(self) -> None:
        self._wake.set()
        self._miss()

    def _miss(self) -> None:
        self.misses += 1
        self.observer.pool_miss(self.tool)

    async def _secret_of(self, name: str) -> str | None:
        core = await self._core()
        try:
            found = self.kube.to_dict(
                await self.kube.call(core.read_namespaced_secret, name, self.ks.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (found.get("data") or {}).get(SECRET_ENV) or ""
        try:
            return base64.b64decode(encoded, validate=True).decode() or None
        except (binascii.Error, UnicodeDecodeError):
            return None

    async def hand_over(self, claimed: Claimed, body: Obj) -> None:
        """The one authenticated call; on failure the pod is deleted (never reused)."""
        try:
            await self.hand_over_call(claimed.pod, body, claimed.secret)
        except BaseException:
            with contextlib.suppress(ApiException):
                await self._delete_pod(claimed.name)
            raise

    async def claimed_of(self, root_uid: str) -> Obj | None:
        """The pod claimed for the root with ``root_uid``, if any (a redeploy adopts it)."""
        for pod in await self._claimed():
            refs = pod["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == root_uid for r in refs) and not pod["metadata"].get(
                "deletionTimestamp"
            ):
                return pod
        return None

    async def _claimed(self) -> list[Obj]:
        core = await self._core()
        found = await self.kube.call(
            core.list_namespaced_pod, self.ks.namespace, label_selector=claimed_selector()
        )
        items: list[Obj] = self.kube.to_dict(found)["items"]
        return items


async def remove_left_pool(kube: KubeClient, ks: KubeSettings, tool: str) -> bool:
    """For an agent without standby pods: the idle pods a crashed agent left (it could not
    close its pool) go, by deleting their standby root: the garbage collector takes the pods,
    their Secrets and the policy; claimed pods are their instances'. True when there were
    some. Looked for with the pod listing every agent may make (conf/role.yaml); deleting
    needs the opt-in standby Role: without it, ApiException 403 (the caller says what to do).
    """
    core = client.CoreV1Api(await kube.api())
    found = await kube.call(core.list_namespaced_pod, ks.namespace, label_selector=_selector(tool))
    if not kube.to_dict(found)["items"]:
        return False
    try:
        await kube.call(core.delete_namespaced_config_map, root_name(tool), ks.namespace,
                        propagation_policy="Background")  # fmt: skip
    except ApiException as exc:
        if exc.status != 404:
            raise
    log.info("removed the %s standby pods a previous agent left (ui_pool_kubernetes is off)", tool)
    return True


async def claimed_ready(kube: KubeClient, namespace: str) -> set[str]:
    """The root uids that own a Ready claimed standby pod (``running()``'s health of a root
    with ``replicas: 0``)."""
    core = client.CoreV1Api(await kube.api())
    found = await kube.call(core.list_namespaced_pod, namespace, label_selector=claimed_selector())
    ready: set[str] = set()
    for pod in kube.to_dict(found)["items"]:
        if pod["metadata"].get("deletionTimestamp") or not _ready(pod):
            continue
        ready.update(str(r.get("uid")) for r in pod["metadata"].get("ownerReferences") or [])
    return ready
