"""The LeaseStore port on a ``coordination.k8s.io/v1`` Lease, the object Kubernetes' own
controllers elect their leader with.

Expiry is judged the way client-go's leader election judges it: a lease another replica holds
counts as lapsed once its record (holder, renew time, resourceVersion) has not changed for its
``leaseDurationSeconds`` as measured on THIS replica's clock, so replicas' clocks need not
agree. Every write replaces the object with the ``resourceVersion`` it read: of two replicas
racing for it, one gets 409 Conflict and does not hold it.

kubernetes-asyncio ships a leader election (``kubernetes_asyncio.leaderelection``) that is not
used: it runs on ``time.time()`` and ``asyncio.sleep`` (no injectable clock to test it with),
``run()`` returns for good after the first lost lease, it never releases the lease on shutdown
(a successor waits out the whole duration), logs a traceback at every lost race, and writes
local time labelled as UTC (``datetime.fromtimestamp`` + ``"Z"``; 36.1.0).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.ports import Clock
from idds_vis.ports.lease import LeaseStore


def _micro_time(when: datetime) -> str:
    """RFC 3339 with microseconds, as a MicroTime field is written."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseStore:
    def __init__(self, kube: KubeClient, namespace: str, clock: Clock) -> None:
        self.kube = kube
        self.namespace = namespace
        self.clock = clock
        # Per lease: the last record seen of another holder, and when (on our clock) it changed.
        self._observed: dict[str, tuple[tuple[Any, ...], datetime]] = {}

    async def _api(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(await self.kube.api())

    async def _read(self, name: str) -> dict[str, Any] | None:
        api = await self._api()
        try:
            lease = await self.kube.call(api.read_namespaced_lease, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.kube.to_dict(lease)

    async def _write(self, lease: dict[str, Any], *, create: bool) -> bool:
        api = await self._api()
        name = lease["metadata"]["name"]
        try:
            if create:
                await self.kube.call(api.create_namespaced_lease, self.namespace, lease)
            else:
                await self.kube.call(api.replace_namespaced_lease, name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise
        return True

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        now = self.clock.now()
        stamp = _micro_time(now)
        lease = await self._read(name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "labels": {"app.kubernetes.io/managed-by": objects.MANAGED_BY},
                },
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": math.ceil(ttl),
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            return await self._write(body, create=True)
        spec = lease.setdefault("spec", {})
        current = spec.get("holderIdentity")
        if current and current != holder and not self._lapsed(name, lease, now):
            return False
        if current != holder:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=holder, leaseDurationSeconds=math.ceil(ttl), renewTime=stamp)
        return await self._write(lease, create=False)

    def _lapsed(self, name: str, lease: dict[str, Any], now: datetime) -> bool:
        spec = lease.get("spec") or {}
        # The resourceVersion changes at every write, so a renewal shows even when the holder's
        # clock gave the same renewTime twice.
        version = (lease.get("metadata") or {}).get("resourceVersion")
        record = (spec.get("holderIdentity"), spec.get("renewTime"), version)
        seen = self._observed.get(name)
        if seen is None or seen[0] != record:
            self._observed[name] = (record, now)
            return False
        duration = float(spec.get("leaseDurationSeconds") or 0)
        return (now - seen[1]).total_seconds() >= duration

    async def release(self, name: str, holder: str) -> None:
        lease = await self._read(name)
        if lease is None:
            return
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != holder:
            return
        spec.pop("holderIdentity", None)
        # As client-go releases: a successor need not wait out the duration.
        spec.update(leaseDurationSeconds=1, renewTime=_micro_time(self.clock.now()))
        lease["spec"] = spec
        await self._write(lease, create=False)

    async def holder(self, name: str) -> str | None:
        """The holder recorded on the Lease (whether or not it lapsed): for tests."""
        lease = await self._read(name)
        value = (lease or {}).get("spec", {}).get("holderIdentity")
        return str(value) if value else None


def _implements_the_port(store: KubeLeaseStore) -> LeaseStore:
    # Never called: mypy checks here that KubeLeaseStore satisfies the port.
    return store
