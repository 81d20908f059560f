"""The decode stage of a write: OpenAPI schema checks, split the way kube-apiserver splits them.

A real server fails JSON *decoding* (wrong type, unknown field under fieldValidation=Strict)
with 400 BadRequest before any validation runs, and reports missing required fields and
unsupported enum values later as 422 Invalid.  The schema errors are sorted into those two
groups here so that status codes and messages match.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from . import schemas
from .errors import ApiError, Cause, bad_request, required, unsupported
from .resources import ResourceType

_DECODE_VALIDATORS = {"type", "oneOf", "anyOf"}
_JSON_TYPES = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}


@dataclass
class Decoded:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)


def dotted(path: Sequence[str | int], indices: bool = True) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]" if indices else ""
        else:
            out += ("." if out else "") + part
    return out


def prune_nulls(value: Any) -> Any:
    """Go decodes `null` as the zero value and never serialises it back, so drop it."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def _go_type(node: dict[str, Any]) -> str:
    if "oneOf" in node or "anyOf" in node:
        return "intstr.IntOrString"
    kinds = node.get("type")
    kind = next((k for k in kinds if k != "null"), "") if isinstance(kinds, list) else kinds
    if kind == "integer":
        return str(node.get("format") or "int64")
    return {
        "string": "string",
        "boolean": "bool",
        "number": "float64",
        "array": "[]",
        "object": "map[string]string",
    }.get(kind or "", "struct")


def _unknown_fields(err: jsonschema.ValidationError) -> list[list[str | int]]:
    schema = err.schema if isinstance(err.schema, dict) else {}
    known = set(schema.get("properties") or {})
    instance = err.instance if isinstance(err.instance, dict) else {}
    return [[*err.absolute_path, key] for key in instance if key not in known]


def _drop(obj: dict[str, Any], path: Sequence[str | int]) -> None:
    cur: Any = obj
    for part in path[:-1]:
        cur = cur[part]
    cur.pop(path[-1], None)


def decode(version: str, rt: ResourceType, body: dict[str, Any], field_validation: str) -> Decoded:
    obj = copy.deepcopy(body)
    out = Decoded(obj)
    if rt.has_schema:
        validator = schemas.validator(version, rt)
        root = schemas.kind_schema(version, rt.kind, rt.group, rt.api_version)
        prefix: list[str | int] = []
        target: Any = obj
    else:
        validator = schemas.object_meta_validator(version)
        root = {}
        prefix = ["metadata"]
        target = obj.get("metadata") or {}
    errors = list(validator.iter_errors(target))
    unknown: list[list[str | int]] = []
    for err in errors:
        path = [*prefix, *err.absolute_path]
        if err.validator in _DECODE_VALIDATORS:
            schema = err.schema if isinstance(err.schema, dict) else {}
            what = _JSON_TYPES.get(type(err.instance), "value")
            holder = schemas.go_type_name(version, root, path) if root else "ObjectMeta"
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: '
                f"cannot unmarshal {what} into Go struct field {holder}."
                f"{dotted(path, indices=False)} of type {_go_type(schema)}"
            )
        if err.validator == "additionalProperties":
            unknown.extend([*prefix, *p] for p in _unknown_fields(err))
        elif err.validator == "required":
            m = re.match(r"'(.+)' is a required property", err.message)
            out.causes.append(required(dotted([*path, m.group(1) if m else "?"])))
        elif err.validator == "enum":
            out.causes.append(
                unsupported(dotted(path), err.instance, [str(v) for v in err.validator_value])
            )
        else:
            out.causes.append(
                Cause("FieldValueInvalid", f"Invalid value: {err.message}", dotted(path))
            )
    if unknown:
        listed = ", ".join(f'unknown field "{dotted(p)}"' for p in unknown)
        if field_validation == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a '
                f"{rt.kind}: strict decoding error: {listed}"
            )
        for p in sorted(unknown, key=len, reverse=True):
            _drop(obj, p)
        if field_validation == "Warn":
            out.warnings.extend(f'unknown field "{dotted(p)}"' for p in unknown)
    if rt.kind == "Secret":
        _check_base64(rt, obj.get("data"))
    out.obj = prune_nulls(obj)
    return out


def _check_base64(rt: ResourceType, data: Any) -> None:
    # []byte fields decode from base64 in Go's JSON decoder, so bad padding is a 400.
    for value in (data or {}).values():
        try:
            base64.b64decode(value or "", validate=True)
        except (ValueError, binascii.Error):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "illegal base64 data at input byte 0"
            ) from None


def check_field_validation(value: str | None, default: str) -> str:
    chosen = value or default
    if chosen not in ("Strict", "Warn", "Ignore"):
        raise ApiError(
            400, f'fieldValidation must be one of "Ignore", "Warn", or "Strict", got "{chosen}"'
        )
    return chosen
