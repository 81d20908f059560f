"""The object store: one resourceVersion counter, the objects, and the change history.

All methods are synchronous: in one asyncio loop that makes every write atomic, so watchers
and controllers observe exactly the order in which writes happened (as etcd revisions do).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped kinds


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    namespace: str
    obj: dict[str, Any]
    # The object before this change, so filtered watches can turn a change that makes an
    # object (stop) match the selector into ADDED/DELETED, as the watch cache does.
    prev: dict[str, Any] | None
    # Bulk-loaded in a settled state (see `load`): controllers have nothing to do for it.
    seeded: bool = False


Listener = Callable[[Change], None]


class Store:
    def __init__(self, history_limit: int = 10_000) -> None:
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {}
        self._by_uid: dict[str, tuple[str, Key]] = {}
        self._rv = 0
        self._history: deque[Change] = deque(maxlen=history_limit)
        # Watches may resume from any RV >= this; older ones get 410 Expired.
        self._oldest_resumable = 0
        self._listeners: list[Listener] = []

    @property
    def current_rv(self) -> int:
        return self._rv

    @property
    def oldest_resumable_rv(self) -> int:
        if self._history and self._history.maxlen == len(self._history):
            return max(self._oldest_resumable, self._history[0].rv - 1)
        return self._oldest_resumable

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(plural, {}).get((namespace, name))

    def items(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        bucket = self._objects.get(plural, {})
        return [bucket[k] for k in sorted(bucket) if namespace is None or k[0] == namespace]

    def all_objects(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for plural, bucket in self._objects.items():
            for obj in list(bucket.values()):
                yield plural, obj

    def by_uid(self, uid: str) -> tuple[str, dict[str, Any]] | None:
        found = self._by_uid.get(uid)
        if not found:
            return None
        obj = self.get(found[0], *found[1])
        return (found[0], obj) if obj is not None else None

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new or changed object under a fresh resourceVersion; emits ADDED/MODIFIED."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        prev = self._objects.get(plural, {}).get(key)
        self._rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        self._objects.setdefault(plural, {})[key] = stored
        self._by_uid[meta["uid"]] = (plural, key)
        self._emit(Change(self._rv, "MODIFIED" if prev else "ADDED", plural, key[0], stored, prev))
        return copy.deepcopy(stored)

    def load(self, plural: str, obj: dict[str, Any]) -> None:
        """Insert a new, already-settled object as is: the store keeps `obj` itself (no copies,
        which is what makes bulk seeding fast). It gets its own resourceVersion and an ADDED
        change in history and for watchers, marked `seeded`."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(plural, {})
        if key in bucket:
            raise ValueError(f"{plural} {key[0]}/{key[1]} exists already")
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        bucket[key] = obj
        self._by_uid[meta["uid"]] = (plural, key)
        self._emit(Change(self._rv, "ADDED", plural, key[0], obj, None, seeded=True))

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        prev = self._objects[plural].pop((namespace, name))
        self._by_uid.pop(prev["metadata"]["uid"], None)
        self._rv += 1
        # The DELETED event carries the revision of the deletion, as etcd reports it.
        final = copy.deepcopy(prev)
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(Change(self._rv, "DELETED", plural, namespace, final, prev))
        return copy.deepcopy(final)

    def _emit(self, change: Change) -> None:
        self._history.append(change)
        for listener in list(self._listeners):
            listener(change)

    def changes_since(self, rv: int) -> list[Change] | None:
        """Changes after `rv`, or None when `rv` is older than the retained history."""
        if rv < self.oldest_resumable_rv:
            return None
        return [c for c in self._history if c.rv > rv]

    def compact(self) -> None:
        """Forget all history, like an etcd compaction: every RV handed out so far expires."""
        self._rv += 1
        self._history.clear()
        self._oldest_resumable = self._rv
