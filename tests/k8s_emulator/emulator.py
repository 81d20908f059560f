"""`KubeEmulator`: an in-process HTTP Kubernetes API server for tests."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from . import kubeconfig, kubelet, schemas
from .controller import DeploymentController
from .errors import ApiError
from .faults import Fault, Faults
from .podsim import Behaviour
from .resources import BY_PLURAL, resolve
from .routes import Routes
from .seeding import Seeder
from .store import Store
from .verbs import Api
from .watch import Watches

# A module-level alias: inside the class, `list` names the method below.
Objects = list[dict[str, Any]]


class KubeEmulator:
    """Serve the Kubernetes API on 127.0.0.1 (random port unless `port` is given).

    `async with KubeEmulator() as emu:` starts it; `emu.write_kubeconfig(path, "ns")` gives
    clients a kubeconfig with a bearer token. Requests without that token get 401.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        kubernetes_version: str = schemas.DEFAULT_VERSION,
        field_validation: str = "Strict",
        history_limit: int = 10_000,
        route_domain: str = "apps.emulator.local",
        namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.host, self._port = host, port
        self.token = token or secrets.token_hex(16)
        self.kubernetes_version = kubernetes_version
        self.store = Store(history_limit)
        self.api = Api(self.store, kubernetes_version, field_validation, route_domain)
        self.watches = Watches(self.store)
        self.faults = Faults()
        self.controller = DeploymentController(self.api)
        self._seeder = Seeder(self.api, self.controller)
        # Real servers end watches after 30-60 min; None keeps them open until timeoutSeconds.
        self.default_watch_timeout: float | None = None
        self._runner: web.AppRunner | None = None
        for name in namespaces:
            self.ensure_namespace(name)

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", Routes(self).handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self.controller.start()

    async def stop(self) -> None:
        self.faults.release_hangs()
        self.watches.close_all()
        await self.controller.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", context: str = "emulator"
    ) -> Path:
        """Write a kubeconfig for this emulator (creating `namespace` if needed)."""
        self.ensure_namespace(namespace)
        return kubeconfig.write(path, self.url, self.token, namespace, context)

    # --- state, for seeding and assertions (copies; writes go through full validation) ---

    def ensure_namespace(self, name: str) -> None:
        if self.store.get("namespaces", "", name) is None:
            self.api.create(
                BY_PLURAL["namespaces"],
                "",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )

    def create(self, obj: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        rt = resolve(obj["kind"])
        ns = (obj.get("metadata") or {}).get("namespace") or namespace
        return self.api.create(rt, ns if rt.namespaced else "", obj).obj

    def seed(self, objects: Iterable[dict[str, Any]], namespace: str = "default") -> Objects:
        """Load many objects fast, as if created and settled: Deployments come with Ready pods
        and their status. Each distinct shape of object is validated once, not each object,
        and the controller does no work for them (see seeding.py). Returns the stored objects."""
        return [copy.deepcopy(obj) for obj in self._seeder.seed(objects, namespace)]

    def get(self, resource: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        rt = resolve(resource)
        found = self.store.get(rt.plural, namespace if rt.namespaced else "", name)
        return copy.deepcopy(found)

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Objects:
        items: Objects = self.api.list(
            resolve(resource), namespace, label_selector, field_selector
        )["items"]
        return items

    def events_for(self, kind: str, name: str, namespace: str = "default") -> Objects:
        return self.list(
            "events",
            namespace,
            field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )

    def container_argv(self, pod: dict[str, Any], container: str) -> list[str]:
        """What the kubelet would start `container` of `pod` with: command and args, with
        `$(VAR)` expanded from its env, envFrom and the Secrets/ConfigMaps they name.
        Raises `kubelet.ContainerConfigError` as the kubelet would fail the container."""
        return kubelet.argv(self.store, pod, container)

    @property
    def resource_version(self) -> int:
        return self.store.current_rv

    # --- pod simulation ---

    def set_behaviour(
        self,
        behaviour: Behaviour | str,
        *,
        name: str | None = None,
        selector: str | None = None,
        namespace: str | None = None,
        image: str | None = None,
    ) -> None:
        """Pods of Deployments matching all given criteria (Deployment `name`, label
        `selector` on the Deployment, `namespace`, a container `image`) behave so. The latest
        matching rule wins; pods without an owning Deployment are matched by their own
        name/labels. Existing matching pods are re-simulated at once."""
        self.controller.set_behaviour(
            behaviour, name=name, selector=selector, namespace=namespace, image=image
        )

    @property
    def default_behaviour(self) -> Behaviour:
        return self.controller.behaviours.default

    @default_behaviour.setter
    def default_behaviour(self, value: Behaviour | str) -> None:
        self.controller.behaviours.default = Behaviour(value)
        self.controller.resync()

    @property
    def quota_exceeded(self) -> bool:
        return self.controller.quota_exceeded

    @quota_exceeded.setter
    def quota_exceeded(self, value: bool) -> None:
        self.controller.quota_exceeded = value
        self.controller.resync()

    # --- faults and accounting ---

    def request_count(self, verb: str, resource: str) -> int:
        return self.faults.requests[(verb, resource)]

    def inject_failure(
        self,
        status: int = 500,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> Fault:
        """The next `times` matching requests (None: all, until cleared) fail with `status`."""
        return self.faults.add(
            Fault(
                "fail", status, verb, resource, namespace, name, path, times, retry_after, message
            )
        )

    def inject_hang(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """The next `times` matching requests never answer (until the emulator stops)."""
        return self.faults.add(Fault("hang", 504, verb, resource, namespace, name, path, times))

    def clear_faults(self) -> None:
        self.faults.clear()

    def pause_gc(self) -> None:
        """Lag the garbage collector, as a busy or stopped kube-controller-manager does: from
        now on dependents of a deleted owner stay (its uid gone, or the owner marked for
        Foreground) until `resume_gc()`."""
        self.api.gc.pause()

    def resume_gc(self) -> None:
        """Collect everything the paused collector left, at once."""
        self.api.gc.resume()

    def silence_watches(self, resource: str | None = None) -> int:
        """Open watches (of `resource`, or all) stop delivering events but stay connected."""
        return self.watches.silence(resolve(resource).plural if resource else None)

    def expire_resource_versions(self) -> None:
        """Compact history: every resourceVersion handed out so far now gives 410 Expired."""
        self.store.compact()


__all__ = ["ApiError", "Behaviour", "KubeEmulator"]
