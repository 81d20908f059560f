"""LIST: selectors, limit/continue pagination, and the typed List envelope."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from .errors import bad_request, expired
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import Store


def list_objects(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    limit: int = 0,
    continue_token: str | None = None,
) -> dict[str, Any]:
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, rt.plural)
    start = ""
    if continue_token:
        try:
            token = json.loads(base64.urlsafe_b64decode(continue_token))
            start, token_rv = token["start"], int(token["rv"])
        except (ValueError, KeyError, TypeError):
            raise bad_request("continue key is not valid") from None
        if token_rv < store.oldest_resumable_rv:
            raise expired(
                "The provided continue parameter is too old to display a "
                "consistent list result. You can start a new list without the "
                "continue parameter."
            )
    items = [
        o
        for o in store.items(rt.plural, namespace)
        if labels.matches(o["metadata"].get("labels")) and fields(o)
    ]
    if start:
        items = [o for o in items if _key(o) > start]
    meta: dict[str, Any] = {"resourceVersion": str(store.current_rv)}
    if limit and len(items) > limit:
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
        token = {"rv": store.current_rv, "start": _key(items[-1])}
        meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
    stripped = []
    for obj in items:
        # Items of a typed list carry no kind/apiVersion on the wire.
        stripped.append(
            {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("kind", "apiVersion")}
        )
    return {
        "kind": f"{rt.kind}List",
        "apiVersion": rt.api_version,
        "metadata": meta,
        "items": stripped,
    }


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
