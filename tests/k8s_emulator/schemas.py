"""Loads the OpenAPI-derived JSON schemas that `kubernetes-validate` ships, once per process.

`kubernetes_validate.validate()` re-reads the 1.8 MB definitions file and rebuilds its
validator on every call (~13 ms); compiled validators cached here take ~0.3 ms per object.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Sequence
from typing import Any

import jsonschema
from referencing import Registry, Resource

from .resources import ResourceType

DEFAULT_VERSION = "1.37"


def _schema_dir(version: str) -> Any:
    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    for entry in root.iterdir():
        if entry.name.startswith(f"v{version}.") and entry.name.endswith("-local-strict"):
            return entry
    raise LookupError(f"kubernetes-validate ships no strict schemas for Kubernetes {version}")


@functools.cache
def definitions(version: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        _schema_dir(version).joinpath("_definitions.json").read_text()
    )
    return loaded


@functools.cache
def kind_schema(version: str, kind: str, group: str, api_version: str) -> dict[str, Any]:
    # kubernetes-validate names files `<kind>-<first group label>-<version>.json`.
    suffix = f"{group.split('.')[0]}-{api_version.split('/')[-1]}" if group else api_version
    loaded: dict[str, Any] = json.loads(
        _schema_dir(version).joinpath(f"{kind.lower()}-{suffix}.json").read_text()
    )
    return loaded


@functools.cache
def _registry(version: str) -> Registry:
    registry: Registry = Resource.from_contents(definitions(version)) @ Registry()
    return registry


@functools.cache
def validator(version: str, rt: ResourceType) -> jsonschema.Draft202012Validator:
    schema = kind_schema(version, rt.kind, rt.group, rt.api_version)
    registry = Resource.from_contents(schema) @ _registry(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def object_meta_validator(version: str) -> jsonschema.Draft202012Validator:
    ref = {
        "$ref": "https://kubernetes.io/api/_definitions.json#/$defs/"
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return jsonschema.Draft202012Validator(ref, registry=_registry(version))


def deref(version: str, node: dict[str, Any] | None) -> dict[str, Any]:
    """Follow `$ref`s (and single-element `allOf`s) to the node that describes a value."""
    defs = definitions(version)["$defs"]
    while node:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            break
    return node or {}


def child(version: str, node: dict[str, Any], key: str | int) -> dict[str, Any]:
    """The schema of `value[key]` given the schema of `value` (empty when unknown)."""
    node = deref(version, node)
    if isinstance(key, int):
        return deref(version, node.get("items"))
    props = node.get("properties") or {}
    if key in props:
        return deref(version, props[key])
    extra = node.get("additionalProperties")
    return deref(version, extra) if isinstance(extra, dict) else {}


def at_path(version: str, root: dict[str, Any], path: Sequence[str | int]) -> dict[str, Any]:
    node = root
    for key in path:
        node = child(version, node, key)
    return node


def go_type_name(version: str, root: dict[str, Any], path: Sequence[str | int]) -> str:
    """The Go struct that holds the field at `path`, for decode-error messages."""
    defs = definitions(version)["$defs"]
    name: str = root.get("x-kubernetes-group-version-kind", [{}])[0].get("kind", "")
    node: dict[str, Any] = root
    for key in list(path)[:-1]:
        if isinstance(key, int):
            raw = node.get("items") or {}
        else:
            raw = (node.get("properties") or {}).get(key) or {}
            if not raw and isinstance(node.get("additionalProperties"), dict):
                raw = node["additionalProperties"]
        while "$ref" in raw or len(raw.get("allOf") or ()) == 1:
            if "$ref" in raw:
                ref = raw["$ref"].rsplit("/", 1)[-1]
                name = ref.rsplit(".", 1)[-1]
                raw = defs[ref]
            else:
                raw = raw["allOf"][0]
        node = raw
    return name
