"""What the control plane lacks, stood in for by the tests: a kubelet and an ingress controller.

The kubelet: each pod the scheduler bound to the fake Node gets the status a kubelet writes for
a started, Ready container (``pods/status``, with the admin's rights, as a kubelet has its own).
Nothing runs: the pod stays a record.

The ingress controller: an HTTPS server on loopback, with a certificate for the UIs' public
host, routing ``/vis/<name>/`` to an answer shaped like the UI's (``idds_vis.ui.stub``: the page
naming a script, the script, the experiment search) while a Ready pod of that UI exists, and
``503`` otherwise, as an ingress with no ready endpoint does. So the agent's real readiness
probe decides "ready" through the same URL it would in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.ui.stub import ASSET, SEARCH

INSTANCE = "app.kubernetes.io/instance"


async def admin_api(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def _ready_status(pod: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
    ]
    containers = [
        {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "started": True,
         "restartCount": 0, "state": {"running": {"startedAt": now}}}
        for c in pod["spec"]["containers"]
    ]  # fmt: skip
    return {"status": {"phase": "Running", "startTime": now, "conditions": conditions,
                       "containerStatuses": containers}}  # fmt: skip


def _path_segment(pod: dict[str, Any]) -> str:
    args = pod["spec"]["containers"][0].get("args") or []
    prefix = args[args.index("--prefix") + 1] if "--prefix" in args else ""
    return str(prefix).rstrip("/").rsplit("/", 1)[-1]


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class StandInKubelet:
    """Makes every bound pod of ``namespace`` Running and Ready; knows which UIs have one."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.api = api
        self.namespace = namespace
        self.ready: dict[str, str] = {}  # pod name -> its UI's instance name
        self.paths: dict[str, str] = {}  # pod name -> the segment of its --prefix
        self.patched = 0
        self.deleted = 0
        # UIs whose pods stay unready until released (an agent killed while it waits for one).
        self.held: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def serving(self, instance: str) -> bool:
        return instance in self.ready.values()

    def instance_at(self, segment: str) -> str | None:
        """The UI with a Ready pod serving ``/vis/<segment>/`` (its random path, issue 17)."""
        for pod, path in self.paths.items():
            if path == segment and pod in self.ready:
                return self.ready[pod]
        return None

    async def release(self, instance: str) -> None:
        self.held.discard(instance)
        listed = await self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{INSTANCE}={instance}")  # fmt: skip
        for pod in self.api.sanitize_for_serialization(listed)["items"]:
            await self._saw("MODIFIED", pod)

    async def bound(self, instance: str) -> bool:
        """A pod of ``instance`` has been scheduled."""
        listed = await self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{INSTANCE}={instance}")  # fmt: skip
        return any(pod.spec.node_name for pod in listed.items)

    async def __aenter__(self) -> StandInKubelet:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:  # a list, then a watch from its version; again after 410 or the end
            listed = await self.core.list_namespaced_pod(self.namespace)
            for pod in self.api.sanitize_for_serialization(listed)["items"]:
                await self._saw("ADDED", pod)
            watcher = watch.Watch()
            try:
                stream = watcher.stream(
                    self.core.list_namespaced_pod, self.namespace,
                    resource_version=listed.metadata.resource_version, timeout_seconds=60,
                )  # fmt: skip
                async for event in stream:
                    raw = event["raw_object"]
                    await self._saw(event["type"], raw)
            except ApiException as exc:
                if exc.status != 410:  # the compaction every 5 s expires versions quickly
                    raise
            finally:
                await watcher.close()

    async def _saw(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        name = meta.get("name", "")
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self.ready.pop(name, None)
            self.paths.pop(name, None)
            if kind != "DELETED" and (pod.get("spec") or {}).get("nodeName"):
                # A bound pod's deletion waits for its kubelet to confirm the containers
                # stopped (the final delete, grace 0); without it the pod stays Terminating.
                await self._confirm_deletion(name, meta.get("uid", ""))
            return
        if not (pod.get("spec") or {}).get("nodeName"):
            return  # not scheduled yet
        instance = (meta.get("labels") or {}).get(INSTANCE, "")
        if instance in self.held:
            return
        if not _is_ready(pod):
            try:
                status = _ready_status(pod)
                await self.core.patch_namespaced_pod_status(name, self.namespace, status)
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile
                    return
                raise
            self.patched += 1
        self.ready[name] = instance
        self.paths[name] = _path_segment(pod)


    async def _confirm_deletion(self, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(grace_period_seconds=0,
                                      preconditions=client.V1Preconditions(uid=uid))  # fmt: skip
        try:
            await self.core.delete_namespaced_pod(name, self.namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or a new pod of that name
                raise
        self.deleted += 1


class StandInIngress:
    """HTTPS on 127.0.0.1 for the UIs' public host; answers for a UI with a Ready pod."""

    def __init__(self, kubelet: StandInKubelet, cert: Path, key: Path) -> None:
        self.kubelet = kubelet
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert, key)
        self.port = 0
        self.hits: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> StandInIngress:
        app = web.Application()
        app.router.add_route("*", "/vis/{name}/{tail:.*}", self._route)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _route(self, request: web.Request) -> web.Response:
        segment, tail = request.match_info["name"], "/" + request.match_info["tail"]
        name = self.kubelet.instance_at(segment)
        if name is None:
            return web.Response(status=503, text="no ready endpoint")
        self.hits[name] = self.hits.get(name, 0) + 1
        if request.method == "GET" and tail == "/":
            page = f'<!doctype html><title>stand-in UI</title><script src="{ASSET}"></script>'
            return web.Response(text=page, content_type="text/html")
        if request.method == "GET" and tail == f"/{ASSET}":
            return web.Response(text="/* stand-in */\n", content_type="text/javascript")
        if request.method == "GET" and tail == "/health":
            return web.Response(text="OK")
        if request.method == "POST" and tail == SEARCH:
            # The pod stages its own data: the agent expects no particular experiment.
            return web.Response(text=json.dumps({"experiments": []}),
                                content_type="application/json")  # fmt: skip
        return web.Response(status=404, text="not found")
