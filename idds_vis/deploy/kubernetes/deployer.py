"""The Kubernetes deployer: objects created or adopted, readiness followed by a watch, deletion
through the root Deployment (the API server's garbage collector removes what it owns).

The garbage collector lags the DELETE of a root: for a while after it, the old root's
dependents still exist (owned by a uid that is gone, or marked with a deletionTimestamp). A
redeploy must not adopt those, or the collector deletes them under the new UI: it adopts only
what the current root owns and waits for the rest to go.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes import listing, objects, reasons
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.kinds import Kind, kinds
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.deploy.kubernetes.standby import StandbyPods, claimed_ready, remove_left_pool
from idds_vis.deploy.kubernetes.standby import root_name as standby_root_name
from idds_vis.deploy.kubernetes.status import Scrub, scrubber, source_secrets, status_message
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import TOOLS, Deployment, Instance, RunningUI, StagedArtefacts
from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.domain.source_policy import MESSAGE_ORIGINS
from idds_vis.ports.lease import WatchObserver

log = logging.getLogger(__name__)
SecretsFor = Callable[[str], dict[str, str] | None]
MANAGED = f"app.kubernetes.io/managed-by={objects.MANAGED_BY}"
INSTANCE = "app.kubernetes.io/instance"
EXPIRES = "idds-vis/expires-at"


def _owned_by(meta: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


def _stale(meta: dict[str, Any], owner_uid: str | None) -> str | None:
    """Why an object of ours must not be adopted (None: adopt it)."""
    if meta.get("deletionTimestamp"):
        return "is being deleted"
    if owner_uid is not None and not _owned_by(meta, owner_uid):
        return "is left from an earlier, deleted UI"
    return None


def _proxy_secret(secret: dict[str, Any], name: str) -> str:
    """The proxy secret a UI's Secret holds (the API returns ``data``, base64)."""
    encoded = (secret.get("data") or {}).get(PROXY_SECRET_ENV)
    try:
        value = base64.b64decode(encoded or "", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        value = ""
    if not value:
        raise DeployError(
            f"the Secret of {name} holds no proxy secret (made before the UIs demanded one?):"
            " tear the UI down and start it again"
        )
    return value


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
        leftover_wait: float = 120.0,
        standby: StandbyPods | None = None,
    ) -> None:
        self.ks = settings
        # Issue 18 (experimental): standby pods a request claims (kubernetes/standby.py).
        self.standby = standby
        self.kube = kube
        self.watch_silence = watch_silence
        # Deployments per list page at reconcile (kubectl's chunk size).
        self.list_chunk = list_chunk
        self.secrets_for = secrets_for
        # Told of each pod watch, so the agent's readiness can report one gone silent.
        self.watches = watches
        # How long a redeploy waits for the garbage collector to remove a deleted UI's objects
        # (measured on kube-controller-manager v1.36: 0.3-1.6 s; a busy one takes longer).
        self.leftover_wait = leftover_wait
        # (name, root uid) -> the proxy secret of a guarded UI (issue 17): the web app's proxy
        # (OpenShift) and its /auth/check (nginx forward-auth) ask for it on every request.
        self._proxy_secrets: dict[tuple[str, str], str] = {}
        self._left_pool_checked = False  # standby pods a crashed agent left (running())

    def staging_dir(self, instance: Instance) -> Path | None:
        return None

    async def _kinds(self) -> dict[str, Kind]:
        return kinds(await self.kube.api())

    # -- create -----------------------------------------------------------------------------
    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        table = await self._kinds()
        source = instance.source or ""
        secret_values = None
        if self.secrets_for is not None:
            # In a thread: finding the values may read credential files.
            secret_values = await asyncio.to_thread(self.secrets_for, source)
        # With a web app the UI answers only requests with this (issue 17): the web app's
        # proxy (OpenShift) or nginx, told it by /auth/check, sends it (objects.guarded).
        proxy_secret = secrets.token_urlsafe(32) if objects.guarded(self.ks) else None
        scrub = scrubber([*source_secrets(source), *(secret_values or {}).values(),
                          *([proxy_secret] if proxy_secret else [])])  # fmt: skip
        body = objects.deployment(
            instance, self.ks, source, instance.expires_at, bool(secret_values)
        )
        # A standby pod stages in the process that then runs MLflow on the staged (hostile)
        # store, where a cold pod's serve-ui stages and then execs MLflow without its
        # credentials: a source that needs credentials (a Secret, or in its URL a password or
        # a query value that may be one: all but numeric ids, as redact_url decides) therefore
        # always starts cold, and a hand-over never carries one (red team, issue 18).
        needs_credentials = bool(secret_values) or any(source_secrets(source))
        if needs_credentials and self.standby is not None:
            log.info("%s starts cold: its source needs credentials", instance.name)
        # The idle standby pods, listed once.
        warm = [] if needs_credentials else await self._may_claim(instance)
        if warm:
            # The root owns the claimed pod: its own ReplicaSet starts none (standby.py).
            body["spec"]["replicas"] = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.leftover_wait
        root = await self._create_or_adopt(table["Deployment"], body, None, deadline, scrub)
        await self._same_expiry(instance, root, scrub)
        made = [{"kind": "Deployment", "name": instance.name}]
        uid = root["metadata"]["uid"]
        values = secret_values
        if proxy_secret is not None:
            values = {**(secret_values or {}), PROXY_SECRET_ENV: proxy_secret}
        for dependent in objects.dependents(instance, self.ks, root, values):
            obj = await self._create_or_adopt(
                table[dependent["kind"]], dependent, uid, deadline, scrub
            )
            if dependent["kind"] == "Secret" and proxy_secret is not None:
                # An adopted Secret keeps the secret it was made with: the pod has that one.
                proxy_secret = _proxy_secret(obj, instance.name)
                self._proxy_secrets[(instance.name, uid)] = proxy_secret
            made.append({"kind": dependent["kind"], "name": dependent["metadata"]["name"]})
        handle: dict[str, Any] = {"namespace": self.ks.namespace, "uid": uid, "objects": made}
        if (root.get("spec") or {}).get("replicas") == 0:
            pod = await self._warm_start(instance, root, warm, proxy_secret, scrub)
            if pod is not None:
                handle["standby_pod"] = pod
        url = objects.public_url(instance, self.ks)
        if not self.ks.web_url:
            return Deployment(url=url, health_url=url + "health", handle=handle)
        # Behind forward-auth or the web app's proxy the public URL asks for a sign-in: the
        # agent probes the UI's Service (its NetworkPolicy admits the agent's pods).
        direct = f"{objects.service_origin(instance, self.ks)}{instance.prefix}/"
        headers = {PROXY_HEADER: proxy_secret} if proxy_secret else {}
        return Deployment(url=url, health_url=direct + "health", handle=handle,
                          probe_url=direct, probe_headers=headers)  # fmt: skip

    async def _may_claim(self, instance: Instance) -> list[dict[str, Any]]:
        if self.standby is None or instance.tool != self.standby.tool:
            return []
        try:
            if idle := await self.standby.idle():
                return idle
        except ApiException as exc:  # the pool's trouble never fails a request: it starts cold
            log.warning("listing the standby pods failed: %s", status_message(exc, lambda t: t))
        self.standby.miss()
        return []

    async def _warm_start(
        self,
        instance: Instance,
        root: dict[str, Any],
        idle: list[dict[str, Any]],
        proxy_secret: str | None,
        scrub: Scrub,
    ) -> str | None:
        """Claim a standby pod for the root (``replicas: 0``) and hand it the source; the name
        of the pod, or None after scaling the root to 1 (a cold start)."""
        uid = root["metadata"]["uid"]
        claimed = None
        if self.standby is not None:
            found = await self.standby.claimed_of(uid)  # a redeploy adopts its claim
            if found is not None:
                return str(found["metadata"]["name"])
            root = {**root, "kind": "Deployment", "apiVersion": "apps/v1"}
            try:
                claimed = await self.standby.claim(instance, root, idle or None)
            except ApiException as exc:
                log.warning("claiming a standby pod failed: %s", status_message(exc, scrub))
        if claimed is not None and self.standby is not None:
            body = {
                "instance": instance.name,
                "prefix": instance.prefix,
                "source": instance.source or "",
                "env": {},  # never credentials (above)
                "guard": instance.origin in MESSAGE_ORIGINS,
                "allow_private_addresses": list(self.ks.allow_private_addresses),
                **({"proxy_secret": proxy_secret} if proxy_secret else {}),
            }
            try:
                await self.standby.hand_over(claimed, body)
                return claimed.name
            except DeployError as exc:
                log.warning("%s: %s; it starts cold", instance.name, scrub(str(exc)))
        apps = client.AppsV1Api(await self.kube.api())
        try:
            await self.kube.call(
                apps.patch_namespaced_deployment, instance.name, self.ks.namespace,
                {"spec": {"replicas": 1}},
            )  # fmt: skip
        except ApiException as exc:
            raise DeployError(
                f"the cluster refused to start {instance.name}: {status_message(exc, scrub)}"
            ) from exc
        return None

    async def close(self) -> None:
        """At the agent's stop: the idle standby pods go (claimed ones are their UIs')."""
        if self.standby is not None:
            await self.standby.close()

    async def upstream(self, instance: Instance) -> tuple[str, dict[str, str]] | None:
        """Where the web app's ``/vis/`` proxy reaches a UI it proxies (OpenShift with a web
        app, ``objects.proxied``) and the header it must add; None otherwise, or when the UI
        has no Secret (not deployed, or gone)."""
        if not objects.proxied(self.ks):
            return None
        headers = await self.proxy_headers(instance)
        if headers is None:
            return None
        return objects.service_origin(instance, self.ks), headers

    async def proxy_headers(self, instance: Instance) -> dict[str, str] | None:
        """The header a guarded UI (``objects.guarded``) demands of every request, from its
        Secret (cached per instance and root uid, bounded); None when the UIs are not guarded
        or the UI has no Secret holding one (not deployed, or gone). Never logged."""
        if not objects.guarded(self.ks):
            return None
        uid = str(instance.handle.get("uid") or "")
        key = (instance.name, uid)
        secret = self._proxy_secrets.get(key)
        if secret is None:
            table = await self._kinds()
            scrub = scrubber(source_secrets(instance.source or ""))
            found = await self._read(table["Secret"], "Secret", instance.name, scrub)
            if found is None or _stale(found.get("metadata") or {}, uid or None):
                return None  # gone, or an earlier UI's the collector has yet to remove
            try:
                secret = _proxy_secret(found, instance.name)
            except DeployError:
                return None
            if len(self._proxy_secrets) > 4096:  # bounded: stale entries of ended UIs go
                self._proxy_secrets.clear()
            self._proxy_secrets[key] = secret
        return {PROXY_HEADER: secret}

    async def _same_expiry(self, instance: Instance, root: dict[str, Any], scrub: Scrub) -> None:
        """An adopted root keeps the expiry it was created with: give it this one, so the
        annotation, the ledger and what a redeploy prints say the same."""
        if instance.expires_at is None:
            return
        stamp = instance.expires_at.isoformat(timespec="seconds")
        if ((root.get("metadata") or {}).get("annotations") or {}).get(EXPIRES) == stamp:
            return
        try:
            await self.record_expiry(instance)
        except ApiException as exc:
            raise DeployError(
                f"the cluster refused the expiry of {instance.name}: {status_message(exc, scrub)}"
            ) from exc
        root.setdefault("metadata", {}).setdefault("annotations", {})[EXPIRES] = stamp

    async def _create_or_adopt(
        self,
        kind: Kind,
        body: dict[str, Any],
        owner_uid: str | None,
        deadline: float,
        scrub: Scrub,
    ) -> dict[str, Any]:
        """Create ``body``, or adopt the object of that name if it is ours, owned by the current
        root (``owner_uid``; None for the root itself) and not being deleted. A leftover of a
        deleted UI is waited for until the garbage collector removed it, then created anew."""
        ns, name, what = self.ks.namespace, body["metadata"]["name"], body["kind"]
        while True:
            try:
                return self.kube.to_dict(await self.kube.call(kind.create, ns, body))
            except ApiException as exc:
                if exc.status != 409:
                    raise DeployError(
                        f"the cluster refused {what} {ns}/{name}: {status_message(exc, scrub)}"
                    ) from exc
            existing = await self._read(kind, what, name, scrub)
            if existing is None:
                continue  # removed between our create and read: create it again
            meta = existing.get("metadata") or {}
            labels = meta.get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") != objects.MANAGED_BY or (
                labels.get(INSTANCE) != name
            ):
                raise DeployError(
                    f"{what} {ns}/{name} already exists and is not managed by idds-vis"
                )
            why = _stale(meta, owner_uid)
            if why is None:
                return existing  # left by an earlier attempt or another replica: adopt it
            await self._wait_removed(kind, what, name, meta.get("uid"), deadline, why, scrub)

    async def _read(self, kind: Kind, what: str, name: str, scrub: Scrub) -> dict[str, Any] | None:
        ns = self.ks.namespace
        try:
            return self.kube.to_dict(await self.kube.call(kind.read, name, ns))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeployError(
                f"the cluster refused to read {what} {ns}/{name}: {status_message(exc, scrub)}"
            ) from exc

    async def _wait_removed(
        self,
        kind: Kind,
        what: str,
        name: str,
        uid: str | None,
        deadline: float,
        why: str,
        scrub: Scrub,
    ) -> None:
        """Until the object with ``uid`` is gone (polled: a get is all the Role grants)."""
        loop = asyncio.get_running_loop()
        pause = 0.1
        while True:
            current = await self._read(kind, what, name, scrub)
            if current is None or (current.get("metadata") or {}).get("uid") != uid:
                return
            if loop.time() >= deadline:
                raise DeployError(
                    f"{what} {self.ks.namespace}/{name} {why}, and the garbage collector had"
                    f" not removed it after {self.leftover_wait:.0f} s"
                )
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 1.0)

    # -- readiness --------------------------------------------------------------------------
    async def wait_started(
        self, instance: Instance, deployment: Deployment, timeout: float
    ) -> None:
        pending: str | None = None  # why it still waits, when that may pass (no node yet)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    state, version, why = await self._check_once(instance.name)
                    if state == "ready":
                        return
                    pending = why or pending
                    await self._watch_pods(instance.name, version)
        except TimeoutError:
            late = f"the UI did not become ready within {timeout:.0f} s"
            raise DeployError(f"{late}: {pending}" if pending else late) from None
        except ApiException as exc:
            scrub = scrubber(source_secrets(instance.source or ""))
            raise DeployError(
                f"the cluster refused to show how {instance.name} starts:"
                f" {status_message(exc, scrub)}"
            ) from exc

    async def _check_once(self, name: str) -> tuple[str | None, str, str | None]:
        """('ready' or None for not yet, the pod list's version, a pending reason);
        DeployError if it never will be ready."""
        api = await self.kube.api()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        ns = self.ks.namespace
        dep = self.kube.to_dict(await self.kube.call(apps.read_namespaced_deployment, name, ns))
        if failure := reasons.deployment_failure(dep):
            raise DeployError(failure)
        selector = f"{INSTANCE}={name}"
        pods = await self.kube.call(core.list_namespaced_pod, ns, label_selector=selector)
        listed = self.kube.to_dict(pods)
        # Only this root's pods count: a deleted UI's pods (with its ReplicaSets) outlive it
        # until the garbage collector gets to them, and may still be Ready.
        owners = {dep["metadata"]["uid"]}
        sets = await self.kube.call(apps.list_namespaced_replica_set, ns, label_selector=selector)
        for rs in self.kube.to_dict(sets)["items"]:
            if _owned_by(rs["metadata"], dep["metadata"]["uid"]):
                owners.add(rs["metadata"]["uid"])
        pending = None
        for pod in listed["items"]:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or not any(_owned_by(meta, u) for u in owners):
                continue
            if reasons.pod_ready(pod):
                return "ready", "", None
            events = await self.kube.call(
                core.list_namespaced_event, ns,
                field_selector=f"involvedObject.name={pod['metadata']['name']}",
            )  # fmt: skip
            items = self.kube.to_dict(events)["items"]
            pending = reasons.pending_reason(pod, items) or pending
            if pending is None:
                failure = reasons.pod_failure(pod) or reasons.event_failure(items)
                if failure:
                    raise DeployError(failure)
        return None, str(listed.get("metadata", {}).get("resourceVersion") or ""), pending

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
        for key in [k for k in self._proxy_secrets if k[0] == name]:
            del self._proxy_secrets[key]
        apps = client.AppsV1Api(await self.kube.api())
        try:
            await self.kube.call(
                apps.delete_namespaced_deployment, name, self.ks.namespace,
                propagation_policy="Background",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    async def delete_if_mine(self, name: str) -> bool:
        """Delete the root of ``name`` only if idds-vis made it (a failed deploy's cleanup must
        not remove a stranger's Deployment that stood in its way); False if it left one."""
        apps = client.AppsV1Api(await self.kube.api())
        try:
            root = self.kube.to_dict(
                await self.kube.call(apps.read_namespaced_deployment, name, self.ks.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        labels = (root.get("metadata") or {}).get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != objects.MANAGED_BY or (
            labels.get(INSTANCE) != name
        ):
            return False
        await self.delete_by_name(name)
        return True

    async def gone(self, name: str) -> bool:
        """True once the root, every object it owned and their ReplicaSets and Pods (which
        terminate for a while after the root is gone) have been removed."""
        table = await self._kinds()
        for kind_name in ("Deployment", *self._dependent_kinds()):
            try:
                await self.kube.call(table[kind_name].read, name, self.ks.namespace)
                return False
            except ApiException as exc:
                if exc.status != 404:
                    raise
        api = await self.kube.api()
        selector = f"{INSTANCE}={name}"
        for lister in (client.AppsV1Api(api).list_namespaced_replica_set,
                       client.CoreV1Api(api).list_namespaced_pod):  # fmt: skip
            listed = await self.kube.call(
                lister, self.ks.namespace, label_selector=selector, limit=1
            )
            if self.kube.to_dict(listed)["items"]:
                return False
        return True

    def _dependent_kinds(self) -> tuple[str, ...]:
        return (*objects.DEPENDENT_KINDS, *objects.exposure_kinds(self.ks))

    async def running(self) -> list[RunningUI]:
        """Every UI's root; healthy only with a ready pod *and* every object it owns (a
        Service removed under a ready pod leaves the UI unreachable, yet ready)."""
        if self.standby is not None:
            self.standby.start()  # the start-up reconcile asks first: refill from then on
        elif not self._left_pool_checked:
            # Turned off after a crash (no close): the idle pods would stay for good.
            self._left_pool_checked = True
            for tool in sorted(TOOLS):
                try:
                    await remove_left_pool(self.kube, self.ks, tool)
                except ApiException as exc:  # not tried again: said, with the way out
                    reason = status_message(exc, lambda t: t)
                    log.warning("could not check for %s standby pods a previous agent left "
                                "(delete ConfigMap %s if there is one): %s",
                                tool, standby_root_name(tool), reason)  # fmt: skip
        table = await self._kinds()
        roots: dict[str, listing.Root] = {}

        def root(raw: bytes) -> str | None:
            page = listing.ROOTS.decode(raw)
            for dep in page.items or []:
                roots[dep.metadata.name] = dep
            return page.metadata.continue_

        await self._list_all(table["Deployment"].list, root, roots.clear)
        owned: set[tuple[str, str, str]] = set()  # (kind, name, owner uid)
        for kind_name in self._dependent_kinds():

            def dependent(raw: bytes, kind_name: str = kind_name) -> str | None:
                page = listing.OWNED.decode(raw)
                for obj in page.items or []:
                    meta = obj.metadata
                    if meta.deletionTimestamp is None:
                        owned.update((kind_name, meta.name, r.uid) for r in meta.ownerReferences)
                return page.metadata.continue_

            await self._list_all(table[kind_name].list, dependent, lambda: None)
        warm: set[str] = set()
        if any(dep.spec.replicas == 0 for dep in roots.values()):
            warm = await claimed_ready(self.kube, self.ks.namespace)
        out: list[RunningUI] = []
        for name, dep in roots.items():
            uid = dep.metadata.uid
            whole = all((k, name, uid) in owned for k in self._dependent_kinds())
            handle = {"namespace": self.ks.namespace, "uid": uid, "image": dep.image}
            ready = uid in warm if dep.spec.replicas == 0 else dep.ready
            out.append(RunningUI(name, handle, healthy=ready and whole))
        return out

    async def _list_all(
        self,
        list_fn: Callable[..., Any],
        each: Callable[[bytes], str | None],
        restart: Callable[[], None],
    ) -> None:
        """Call ``each`` on every page of our objects; it returns the page's continue token
        (``restart`` comes first if the list has to start over)."""
        token: str | None = None
        while True:
            try:
                page = await self._list_page(list_fn, token, self.list_chunk)
            except ApiException as exc:
                if exc.status != 410 or token is None:
                    raise
                # The continue token expired (history compacted meanwhile): one full list,
                # as client-go's pager falls back to.
                restart()
                page = await self._list_page(list_fn, None, None)
            token = each(page) or None
            if token is None:
                return

    async def _list_page(
        self, list_fn: Callable[..., Any], token: str | None, limit: int | None
    ) -> bytes:
        # Raw JSON, not models: building 10,000 Deployment models costs seconds of CPU. In
        # pages: 10,000 parsed at once peaked the agent at 368 MB RSS, 163 MB in pages of 500.
        paging: dict[str, Any] = {"limit": limit} if limit else {}
        if token:
            paging["_continue"] = token

        async def fetch(**kwargs: Any) -> bytes:
            response: Any = await list_fn(
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

        page: bytes = await self.kube.call(fetch)
        return page
