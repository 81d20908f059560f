"""What the reconciler reads of listed objects, decoded straight from the JSON pages.

msgspec decodes only these fields and skips the rest without building it: decoding 50,000
objects (a reconcile of 10,000 UIs: Deployments and four kinds of dependents) as plain dicts
took 2.6 s of the agent's CPU, and kubernetes-asyncio models take several times that.
"""

from __future__ import annotations

import msgspec


class OwnerRef(msgspec.Struct):
    uid: str = ""


class Meta(msgspec.Struct):
    name: str = ""
    uid: str = ""
    ownerReferences: list[OwnerRef] = msgspec.field(default_factory=list)
    deletionTimestamp: str | None = None


class Container(msgspec.Struct):
    name: str = ""
    image: str | None = None


class PodSpec(msgspec.Struct):
    containers: list[Container] = msgspec.field(default_factory=list)


class Template(msgspec.Struct):
    spec: PodSpec = msgspec.field(default_factory=PodSpec)


class RootSpec(msgspec.Struct):
    template: Template = msgspec.field(default_factory=Template)
    replicas: int = 1  # 0: its pod is a claimed standby pod (kubernetes/standby.py)


class RootStatus(msgspec.Struct):
    readyReplicas: int = 0


class Root(msgspec.Struct):
    """A UI's Deployment: its name and uid, how many pods are ready, its UI image."""

    metadata: Meta
    spec: RootSpec = msgspec.field(default_factory=RootSpec)
    status: RootStatus | None = None

    @property
    def ready(self) -> bool:
        return self.status is not None and self.status.readyReplicas >= 1

    @property
    def image(self) -> str | None:
        images = [c.image for c in self.spec.template.spec.containers if c.name == "ui"]
        return images[0] if images else None


class Owned(msgspec.Struct):
    """A dependent (Secret, Service, Ingress/Route, NetworkPolicy): whose it is."""

    metadata: Meta


class ListMeta(msgspec.Struct):
    continue_: str | None = msgspec.field(default=None, name="continue")


class RootPage(msgspec.Struct):
    items: list[Root] | None = None
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


class OwnedPage(msgspec.Struct):
    items: list[Owned] | None = None
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


ROOTS = msgspec.json.Decoder(RootPage)
OWNED = msgspec.json.Decoder(OwnedPage)
