"""The Kubernetes deployer: objects created or adopted, readiness followed by a watch, deletion
through the root Deployment (the API server's garbage collector removes what it owns)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes import objects, reasons
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.kinds import Kind, kinds
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import Deployment, Instance, RunningUI, StagedArtefacts
from idds_vis.ports.lease import WatchObserver

SecretsFor = Callable[[str], dict[str, str] | None]
MANAGED = f"app.kubernetes.io/managed-by={objects.MANAGED_BY}"


def _message(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}"


class KubernetesDeployer:
    """The pod stages the artefacts itself (``idds-vis serve-ui`` is the image's entrypoint)."""

    name = "kubernetes"

    def __init__(
        self,
        settings: KubeSettings,
        kube: KubeClient,
        *,
        watch_silence: float = 30.0,
        secrets_for: SecretsFor | None = None,
        watches: WatchObserver | None = None,
        list_chunk: int = 500,
    ) -> None:
        self.ks = settings
        self.kube = kube
        self.watch_silence = watch_silence
        # Deployments per list page at reconcile (kubectl's chunk size).
        self.list_chunk = list_chunk
        self.secrets_for = secrets_for
        # Told of each pod watch, so the agent's readiness can report one gone silent.
        self.watches = watches

    def staging_dir(self, instance: Instance) -> Path | None:
        return None

    async def _kinds(self) -> dict[str, Kind]:
        return kinds(await self.kube.api())

    # -- create -----------------------------------------------------------------------------
    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        table = await self._kinds()
        secret_values = None
        if self.secrets_for is not None:
            # In a thread: finding the values may read credential files.
            secret_values = await asyncio.to_thread(self.secrets_for, instance.source or "")
        body = objects.deployment(
            instance, self.ks, instance.source or "", instance.expires_at, bool(secret_values)
        )
        root = await self._create_or_adopt(table["Deployment"], body)
        made = [{"kind": "Deployment", "name": instance.name}]
        for dependent in objects.dependents(instance, self.ks, root, secret_values):
            await self._create_or_adopt(table[dependent["kind"]], dependent)
            made.append({"kind": dependent["kind"], "name": dependent["metadata"]["name"]})
        url = objects.public_url(instance, self.ks)
        handle = {"namespace": self.ks.namespace, "uid": root["metadata"]["uid"], "objects": made}
        return Deployment(url=url, health_url=url + "health", handle=handle)

    async def _create_or_adopt(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        ns, name, what = self.ks.namespace, body["metadata"]["name"], body["kind"]
        try:
            return self.kube.to_dict(await self.kube.call(kind.create, ns, body))
        except ApiException as exc:
            if exc.status != 409:
                raise DeployError(
                    f"the cluster refused {what} {ns}/{name}: {_message(exc)}"
                ) from exc
        existing = self.kube.to_dict(await self.kube.call(kind.read, name, ns))
        labels = existing.get("metadata", {}).get("labels") or {}
        mine = labels.get("app.kubernetes.io/managed-by") == objects.MANAGED_BY
        if mine and labels.get("app.kubernetes.io/instance") == name:
            return existing  # left by an earlier attempt or another replica: adopt it
        raise DeployError(f"{what} {ns}/{name} already exists and is not managed by idds-vis")

    # -- readiness --------------------------------------------------------------------------
    async def wait_started(
        self, instance: Instance, deployment: Deployment, timeout: float
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    state, version = await self._check_once(instance.name)
                    if state == "ready":
                        return
                    await self._watch_pods(instance.name, version)
        except TimeoutError:
            raise DeployError(f"the UI did not become ready within {timeout:.0f} s") from None

    async def _check_once(self, name: str) -> tuple[str | None, str]:
        """('ready' or None for not yet, the pod list's version); DeployError if it never will."""
        api = await self.kube.api()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        ns = self.ks.namespace
        dep = self.kube.to_dict(await self.kube.call(apps.read_namespaced_deployment, name, ns))
        if failure := reasons.deployment_failure(dep):
            raise DeployError(failure)
        pods = await self.kube.call(
            core.list_namespaced_pod, ns, label_selector=f"app.kubernetes.io/instance={name}"
        )
        listed = self.kube.to_dict(pods)
        for pod in listed["items"]:
            if reasons.pod_ready(pod):
                return "ready", ""
            events = await self.kube.call(
                core.list_namespaced_event, ns,
                field_selector=f"involvedObject.name={pod['metadata']['name']}",
            )  # fmt: skip
            failure = reasons.pod_failure(pod) or reasons.event_failure(
                self.kube.to_dict(events)["items"]
            )
            if failure:
                raise DeployError(failure)
        return None, str(listed.get("metadata", {}).get("resourceVersion") or "")

    async def _watch_pods(self, name: str, version: str) -> None:
        """Return on any change of the UI's pods, on 410 Gone, or when the watch goes silent."""
        api = await self.kube.api()
        core = client.CoreV1Api(api)
        watcher = watch.Watch()
        stream = watcher.stream(
            core.list_namespaced_pod, self.ks.namespace,
            label_selector=f"app.kubernetes.io/instance={name}",
            timeout_seconds=int(self.watch_silence), resource_version=version or None,
        )  # fmt: skip
        events = stream.__aiter__()
        tracked = None
        if self.watches is not None:
            tracked = self.watches.opened(f"the pods of {name}", self.watch_silence)
        try:
            # The server-side timeout ends a healthy watch; this one catches a silent socket.
            async with asyncio.timeout(self.watch_silence + 5):
                await events.__anext__()
        except (StopAsyncIteration, TimeoutError):
            pass
        except ApiException as exc:
            if exc.status != 410:  # 410: our resourceVersion is too old; list again
                raise
        finally:
            if tracked is not None:
                tracked.close()
            with contextlib.suppress(Exception):
                await watcher.close()

    async def record_expiry(self, instance: Instance) -> None:
        """Expiry on the root object too, so extending moves both it and the ledger."""
        apps = client.AppsV1Api(await self.kube.api())
        notes = objects.annotations_for(instance, self.ks, instance.expires_at)
        await self.kube.call(
            apps.patch_namespaced_deployment, instance.name, self.ks.namespace,
            {"metadata": {"annotations": notes}},
        )  # fmt: skip

    async def roll_to_current(self, ui: RunningUI) -> bool:
        """Patch the pod template's image when the configured UI image changed; the Deployment's
        rolling update (maxUnavailable 0) replaces the pod without a gap."""
        if ui.handle.get("image") == self.ks.image:
            return False
        apps = client.AppsV1Api(await self.kube.api())
        name, ns = ui.name, self.ks.namespace
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "ui", "image": self.ks.image}]}}}}  # fmt: skip
        await self.kube.call(apps.patch_namespaced_deployment, name, ns, patch)
        return True

    # -- delete and list --------------------------------------------------------------------
    async def delete(self, instance: Instance) -> None:
        await self.delete_by_name(instance.name)

    async def delete_by_name(self, name: str) -> None:
        apps = client.AppsV1Api(await self.kube.api())
        try:
            await self.kube.call(
                apps.delete_namespaced_deployment, name, self.ks.namespace,
                propagation_policy="Background",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    async def gone(self, name: str) -> bool:
        """True once the root and every object it owned have been removed."""
        table = await self._kinds()
        for kind_name in ("Deployment", "Service", "NetworkPolicy", self._exposure_kind()):
            try:
                await self.kube.call(table[kind_name].read, name, self.ks.namespace)
                return False
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return True

    def _exposure_kind(self) -> str:
        return "Route" if self.ks.exposure == "route" else "Ingress"

    async def running(self) -> list[RunningUI]:
        apps = client.AppsV1Api(await self.kube.api())
        out: list[RunningUI] = []
        token: str | None = None
        while True:
            try:
                page = await self._list_page(apps, token, self.list_chunk)
            except ApiException as exc:
                if exc.status != 410 or token is None:
                    raise
                # The continue token expired (history compacted meanwhile): one full list,
                # as client-go's pager falls back to.
                out, page = [], await self._list_page(apps, None, None)
            for dep in page["items"]:
                ready = (dep.get("status") or {}).get("readyReplicas") or 0
                images = [c.get("image") for c in dep["spec"]["template"]["spec"]["containers"]
                          if c.get("name") == "ui"]  # fmt: skip
                handle = {"namespace": self.ks.namespace, "uid": dep["metadata"]["uid"],
                          "image": images[0] if images else None}  # fmt: skip
                out.append(RunningUI(dep["metadata"]["name"], handle, healthy=ready >= 1))
            token = page["metadata"].get("continue") or None
            if token is None:
                return out

    async def _list_page(
        self, apps: client.AppsV1Api, token: str | None, limit: int | None
    ) -> dict[str, Any]:
        # Raw JSON, not models: building 10,000 Deployment models costs seconds of CPU. In
        # pages: 10,000 parsed at once peaked the agent at 368 MB RSS, 163 MB in pages of 500.
        paging: dict[str, Any] = {"limit": limit} if limit else {}
        if token:
            paging["_continue"] = token

        async def fetch(**kwargs: Any) -> bytes:
            response: Any = await apps.list_namespaced_deployment(
                self.ks.namespace, label_selector=MANAGED, _preload_content=False,
                **paging, **kwargs,
            )  # fmt: skip
            body: bytes = await response.read()
            if not 200 <= response.status <= 299:
                # The client checks the status of loaded responses only: raise (and so retry
                # transient errors) as it does for those.
                exc = ApiException(status=response.status, reason=response.reason)
                exc.body, exc.headers = body, response.headers
                raise exc
            return body

        page: dict[str, Any] = json.loads(await self.kube.call(fetch))
        return page
