"""The envelope of a written object: kind, apiVersion, name and namespace against the URL."""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import bad_request, not_found
from .resources import BY_PLURAL, ResourceType
from .store import Store


def check(store: Store, rt: ResourceType, body: Any, namespace: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    if not body.get("kind"):
        raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
    if body.get("apiVersion") != rt.api_version or body.get("kind") != rt.kind:
        raise bad_request(
            f"the API version in the data ({body.get('apiVersion')}) does not "
            f"match the expected API version ({rt.api_version})"
            if body.get("apiVersion") != rt.api_version
            else f"the kind in the data ({body.get('kind')}) does not match the "
            f"expected kind ({rt.kind})"
        )
    checked: dict[str, Any] = copy.deepcopy(body)
    meta = checked.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if rt.namespaced:
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        meta["namespace"] = namespace
        if store.get("namespaces", "", namespace) is None:
            raise not_found(BY_PLURAL["namespaces"], namespace)
    else:
        meta.pop("namespace", None)
    return checked
