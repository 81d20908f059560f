"""The API verbs on top of the store: create, get, list, update, patch, delete.

Each write runs the pipeline of a real registry in its order: decode (400), admission-like
defaulting, validation (422), preconditions (404/409), then the store write.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import defaults, envelope, listing, names, patching, schemas, semantic, validation
from .clock import now
from .errors import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from .gc import GarbageCollector
from .resources import ResourceType
from .store import Store

_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "namespace",
    "name",
)


@dataclass
class Written:
    obj: dict[str, Any]
    created: bool = False
    warnings: list[str] = field(default_factory=list)


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that is not metadata or status: a change here bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Api:
    def __init__(
        self, store: Store, version: str, field_validation: str, route_domain: str
    ) -> None:
        self.store = store
        self.version = version
        self.field_validation = field_validation
        self.route_domain = route_domain
        self.alloc = defaults.Allocator()
        self.gc = GarbageCollector(store)

    def _schema(self, rt: ResourceType) -> dict[str, Any] | None:
        if not rt.has_schema:
            return None
        return schemas.kind_schema(self.version, rt.kind, rt.group, rt.api_version)

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.plural, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        field_validation: str | None = None,
        dry_run: bool = False,
    ) -> Written:
        body = envelope.check(self.store, rt, body, namespace)
        if body["metadata"].get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        decoded = validation.decode(
            self.version, rt, body, field_validation or self.field_validation
        )
        obj = decoded.obj
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + names.random_suffix()
        defaults.initial_status(rt, obj)
        defaults.apply(rt, obj, self.alloc, self.route_domain)
        causes = decoded.causes + semantic.validate(rt, obj)
        if causes:
            raise invalid(rt, meta.get("name", ""), causes)
        if self.store.get(rt.plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rt, meta["name"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(key, None)
        if rt.has_generation:
            meta["generation"] = 1
        if dry_run:
            return Written(obj, True, decoded.warnings)
        stored = self.store.put(rt.plural, obj)
        if meta.get("ownerReferences"):
            self.gc.schedule()
        return Written(stored, True, decoded.warnings)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        return listing.list_objects(
            self.store, rt, namespace, label_selector, field_selector, limit, continue_token
        )

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        field_validation: str | None = None,
        dry_run: bool = False,
        system: bool = False,
    ) -> Written:
        old = self.store.get(rt.plural, namespace, name)
        if old is None:
            if rt.create_on_update and subresource is None:
                return self.create(
                    rt, namespace, body, field_validation=field_validation, dry_run=dry_run
                )
            raise not_found(rt, name)
        body = envelope.check(self.store, rt, body, namespace)
        meta = body["metadata"]
        if meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match "
                f"the name on the URL ({name})"
            )
        if (
            meta.get("resourceVersion")
            and meta["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(rt, name, STALE)
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {old['metadata']['uid']}",
            )
        decoded = validation.decode(
            self.version, rt, body, field_validation or self.field_validation
        )
        new = decoded.obj
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status or {}
        elif rt.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        for key in _SYSTEM_META:
            new["metadata"].pop(key, None)
            if key in old["metadata"]:
                new["metadata"][key] = old["metadata"][key]
        defaults.keep_allocations(rt, old, new)
        defaults.apply(rt, new, self.alloc, self.route_domain)
        causes = decoded.causes + semantic.validate(rt, new)
        if not system:
            causes += semantic.immutability(rt, old, new)
        if old["metadata"].get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or []) - set(
                old["metadata"].get("finalizers") or []
            )
            if added:
                causes.append(
                    forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )
                )
        if causes:
            raise invalid(rt, name, causes)
        if rt.has_generation and _content(new) != _content(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:
            return Written(copy.deepcopy(new), False, decoded.warnings)
        stored = self.store.put(rt.plural, new)
        if new["metadata"].get("ownerReferences") != old["metadata"].get("ownerReferences"):
            self.gc.schedule()
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers"):
            self.gc.finalize(rt, stored)
        return Written(stored, False, decoded.warnings)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        field_validation: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> Written:
        if content_type == patching.APPLY_PATCH and not field_manager:
            raise bad_request(
                "PATCH requests with apply content type must have fieldManager query parameter"
            )
        old = self.store.get(rt.plural, namespace, name)
        if old is None:
            if content_type == patching.APPLY_PATCH and subresource is None:
                return self.create(
                    rt, namespace, patch, field_validation=field_validation, dry_run=dry_run
                )
            raise not_found(rt, name)
        patched = patching.apply(
            self.version, self._schema(rt), content_type, copy.deepcopy(old), patch
        )
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)
        return self.update(
            rt,
            namespace,
            name,
            patched,
            subresource=subresource,
            field_validation=field_validation,
            dry_run=dry_run,
        )

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        options = options or {}
        old = self.store.get(rt.plural, namespace, name)
        if old is None:
            raise not_found(rt, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {old['metadata']['uid']}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(
                rt,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object "
                f"meta: {old['metadata']['resourceVersion']}",
            )
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(
                422,
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                f'Unsupported value: "{policy}": supported values: '
                f'"Foreground", "Background", "Orphan", "nil"',
                "Invalid",
            )
        if dry_run:
            return copy.deepcopy(old)
        return self.gc.delete(rt, copy.deepcopy(old), policy)
