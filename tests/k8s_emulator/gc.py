"""Deletion with propagation and the ownerReferences garbage collector.

Like the real GC, collection runs *after* the owner's DELETE has returned (Background), removes
a dependent only when none of its owners (by uid) is left, and strips the owner's references
from dependents for Orphan.  Foreground marks the owner (deletionTimestamp plus the
`foregroundDeletion` finalizer), deletes dependents recursively, and removes the owner last.

A real collector lags (it runs in kube-controller-manager, from its own informers): `paused`
stands in for a busy or stopped one (kube-controller-manager under SIGSTOP). While paused
nothing is collected: a Background delete removes the owner only and its dependents stay,
owned by a uid that is gone; a Foreground delete leaves the owner marked with its
deletionTimestamp. `resume()` collects everything due.
"""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING, Any

from .clock import now
from .resources import BY_PLURAL, ResourceType

if TYPE_CHECKING:
    from .store import Store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def success(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "name": obj["metadata"]["name"],
        "kind": rt.plural,
        "uid": obj["metadata"]["uid"],
    }
    if rt.group:
        details["group"] = rt.group
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._scheduled = False
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.sweep()

    def delete(self, rt: ResourceType, obj: dict[str, Any], policy: str) -> dict[str, Any]:
        """Delete `obj`; returns the DELETE response body."""
        uid = obj["metadata"]["uid"]
        if policy == "Orphan":
            for plural, dep in self.dependents(uid):
                changed = copy.deepcopy(dep)
                changed["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid
                ]
                if not changed["metadata"]["ownerReferences"]:
                    del changed["metadata"]["ownerReferences"]
                self.store.put(plural, changed)
        if policy == "Foreground":
            marked = copy.deepcopy(obj)
            meta = marked["metadata"]
            meta.setdefault("deletionTimestamp", now())
            meta.setdefault("deletionGracePeriodSeconds", 0)
            if FOREGROUND not in meta.setdefault("finalizers", []):
                meta["finalizers"].append(FOREGROUND)
            stored = self.store.put(rt.plural, marked)
            self.schedule()
            return stored
        return self.finalize(rt, obj)

    def finalize(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Remove `obj` now unless finalizers hold it (then only mark it as being deleted)."""
        meta = obj["metadata"]
        if meta.get("finalizers") or rt.kind == "Namespace":
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(obj)
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.kind == "Namespace":
                marked["status"] = {"phase": "Terminating"}
            stored = self.store.put(rt.plural, marked)
            if rt.kind == "Namespace" and not meta.get("finalizers"):
                # The namespace controller empties it, then lifts the `kubernetes` finalizer.
                self._empty_namespace(meta["name"])
                self._remove(rt, stored)
            return stored
        self._remove(rt, obj)
        return success(rt, obj)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.store.remove(rt.plural, meta.get("namespace", ""), meta["name"])
        self.schedule()

    def _empty_namespace(self, namespace: str) -> None:
        for plural, obj in list(self.store.all_objects()):
            if BY_PLURAL[plural].namespaced and obj["metadata"].get("namespace") == namespace:
                self.store.remove(plural, namespace, obj["metadata"]["name"])

    def dependents(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (plural, obj)
            for plural, obj in self.store.all_objects()
            if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
        ]

    def _has_live_owner(self, obj: dict[str, Any]) -> bool:
        namespace = obj["metadata"].get("namespace", "")
        for ref in obj["metadata"].get("ownerReferences") or []:
            found = self.store.by_uid(ref.get("uid", ""))
            if found is None:
                continue
            plural, owner = found
            if not BY_PLURAL[plural].namespaced or owner["metadata"].get("namespace") == namespace:
                return True
        return False

    def schedule(self) -> None:
        """Collect soon, after the current request has been answered."""
        if self._scheduled or self.paused:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sweep()
            return
        self._scheduled = True
        loop.call_soon(self.sweep)

    def sweep(self) -> None:
        self._scheduled = False
        if self.paused:
            return
        progress = True
        while progress:
            progress = False
            for plural, obj in list(self.store.all_objects()):
                meta = obj["metadata"]
                current = self.store.get(plural, meta.get("namespace", ""), meta["name"])
                if current is None or current["metadata"]["uid"] != meta["uid"]:
                    continue
                rt = BY_PLURAL[plural]
                if (
                    meta.get("ownerReferences")
                    and not meta.get("deletionTimestamp")
                    and not self._has_live_owner(current)
                ):
                    self.delete(rt, current, "Background")
                    progress = True
                elif meta.get("deletionTimestamp") and FOREGROUND in meta.get("finalizers", []):
                    progress |= self._advance_foreground(rt, current)

    def _advance_foreground(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        uid = obj["metadata"]["uid"]
        marked = False
        for plural, dep in self.dependents(uid):
            if not dep["metadata"].get("deletionTimestamp"):
                # Dependents go foreground too, so the whole tree is gone before the root.
                self.delete(BY_PLURAL[plural], dep, "Foreground")
                marked = True
        if self.dependents(uid):
            return marked
        done = copy.deepcopy(obj)
        done["metadata"]["finalizers"] = [
            f for f in obj["metadata"]["finalizers"] if f != FOREGROUND
        ]
        if not done["metadata"]["finalizers"]:
            self.store.put(rt.plural, done)
            self._remove(rt, done)
        else:
            self.store.put(rt.plural, done)
        return True
