"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902).

Strategic merge reads `x-kubernetes-patch-strategy`/`-merge-key` from the same OpenAPI schema
the validator uses, so `containers` merge by name and `ports` by containerPort as on a real
server. Supported directives: `$patch: replace|delete|merge` and
`$deleteFromPrimitiveList/<field>`; `$setElementOrder/<field>` and `$retainKeys` are accepted
and ignored.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from . import schemas
from .errors import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list(
    version: str, node: dict[str, Any], original: list[Any], patch: list[Any]
) -> list[Any]:
    strategy = str(node.get("x-kubernetes-patch-strategy", ""))
    if "merge" not in strategy.split(","):
        return [_strip(p) for p in patch]
    key = node.get("x-kubernetes-patch-merge-key")
    result = copy.deepcopy(original)
    if not key:  # a primitive list merged as a set (e.g. finalizers)
        return result + [p for p in patch if p not in result]
    item_schema = schemas.child(version, node, 0)
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"invalid patch: list item {item!r} has no merge key {key!r}")
        if item.get("$patch") == "replace":
            return [_strip(p) for p in patch if p.get("$patch") != "replace"]
        index = next(
            (
                i
                for i, o in enumerate(result)
                if isinstance(o, dict) and o.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(_strip(item))
        else:
            result[index] = strategic_merge(version, item_schema, result[index], item)
    return result


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def strategic_merge(version: str, node: dict[str, Any], original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return _strip(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    result = copy.deepcopy(original)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue
        child = schemas.child(version, node, key) if node else {}
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(version, child, result[key], value)
        elif isinstance(value, dict):
            merged = strategic_merge(version, child, result.get(key, {}), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = _strip(value)
    return result


def apply(
    version: str,
    schema: dict[str, Any] | None,
    content_type: str,
    original: dict[str, Any],
    patch: Any,
) -> dict[str, Any]:
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        try:
            patched: dict[str, Any] = jsonpatch.apply_patch(original, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(
                422,
                f"the server rejected our request due to an error in our request: {exc}",
                "Invalid",
            ) from None
        return patched
    if not isinstance(patch, dict):
        raise bad_request("couldn't get version/kind; json parse error: patch must be an object")
    if content_type == MERGE_PATCH:
        merged: dict[str, Any] = merge_patch(original, patch)
        return merged
    if content_type in (STRATEGIC_PATCH, APPLY_PATCH):
        # Routes have no schema here: their lists (status.ingress) are then replaced whole.
        result: dict[str, Any] = strategic_merge(version, schema or {}, original, patch)
        return result
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media "
        f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, "
        f"{STRATEGIC_PATCH}",
        "UnsupportedMediaType",
    )
