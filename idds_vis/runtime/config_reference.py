"""The configuration reference, generated from the settings schema (``Settings``' fields).

The docs site's build calls :func:`render_markdown` for ``docs/reference/configuration.md``, so
the reference lists exactly the settings ``load_settings`` accepts, with their types, defaults,
ranges or choices, and descriptions.
"""

from __future__ import annotations

import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from idds_vis.domain.expiry import format_duration
from idds_vis.runtime.config import DEFAULT_STATE_DIR, field_infos, setting_names

_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
          timedelta: "duration", type(None): "null", Any: "any"}  # fmt: skip


def type_name(annotation: Any) -> str:
    """``int | None`` -> ``integer or null``; ``dict[str, timedelta]`` -> ``mapping of string
    to duration``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is Literal:
        return " or ".join(sorted({type_name(type(a)) for a in args}))
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if args else "mapping"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(annotation: Any, info: FieldInfo) -> list[Any]:
    found = list(info.metadata)
    stack = [annotation]
    while stack:
        item = stack.pop()
        if typing.get_origin(item) is typing.Annotated:
            found.extend(getattr(item, "__metadata__", ()))
            stack.append(typing.get_args(item)[0])
        elif typing.get_origin(item) in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(item))
        elif isinstance(item, FieldInfo):
            found.extend(item.metadata)
    for meta in list(found):
        if isinstance(meta, FieldInfo):
            found.extend(meta.metadata)
    return found


def range_of(annotation: Any, info: FieldInfo) -> str:
    """``1 to 256``, ``at least 0``, or the choices of a Literal; empty when unconstrained."""
    low = high = None
    for meta in _constraints(annotation, info):  # annotated_types' Ge, Gt, Le, Lt
        if getattr(meta, "ge", None) is not None:
            low = f"{meta.ge}"
        elif getattr(meta, "gt", None) is not None:
            low = f"more than {meta.gt}"
        elif getattr(meta, "le", None) is not None:
            high = f"{meta.le}"
        elif getattr(meta, "lt", None) is not None:
            high = f"less than {meta.lt}"
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    choices = _literal_choices(annotation)
    return ", ".join(f"`{c}`" for c in choices) if choices else ""


def _literal_choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [c for a in typing.get_args(annotation) for c in _literal_choices(a)]


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    return _show(value)


def _show(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if value == DEFAULT_STATE_DIR:
        return "`~/.idds-vis`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)) and not value:
        return "`[]`" if isinstance(value, list) else "`{}`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """The reference page: an introduction, then one table row per setting."""
    lines = [
        "# Configuration reference",
        "",
        "Settings come from a YAML file (`--config FILE` or `IDDS_VIS_CONFIG`); "
        "`--state-dir` and `--database-url` (or `IDDS_VIS_STATE_DIR`, `IDDS_VIS_DATABASE_URL`) "
        "override the file. Every value is checked at start: a wrong type, a value out of range, "
        "an unknown name (with a suggestion) or an unreadable file stops the command with one "
        "line on stderr naming the setting, and a non-zero exit.",
        "",
        "Durations are written like `30s`, `90m`, `24h`, `7d` or `1h30m` (a bare number is "
        "seconds). `null` means unset. Names may also be written with `-` instead of `_`.",
        "",
        "This page is generated from the settings schema (`idds_vis/runtime/config.py`).",
        "",
        "| setting | type | default | range / choices | description |",
        "|---|---|---|---|---|",
    ]
    infos = field_infos()
    for name in setting_names():
        info = infos[name]
        annotation = info.annotation
        lines.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    f"`{name}`",
                    type_name(annotation),
                    default_text(info),
                    range_of(annotation, info),
                    info.description or "",
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
