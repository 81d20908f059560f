"""MkDocs hook: writes reference/configuration.md at build time from the settings schema.

The page is generated (never committed), so it cannot drift from the code: it is the output of
``idds_vis.runtime.config_reference.render_markdown()``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/configuration.md"
_ROOT = Path(__file__).resolve().parents[2]


def _render() -> str:
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    try:
        from idds_vis.runtime.config_reference import render_markdown
    except ModuleNotFoundError as e:
        if e.name != "idds_vis.runtime.config_reference":
            raise
        return _fallback()
    return str(render_markdown())


def _fallback() -> str:
    # Until the schema's renderer exists: the fields of the Settings dataclass.
    from idds_vis.runtime.config import Settings

    lines = [
        "# Configuration reference",
        "",
        "Every key of the settings file (`--config` / `IDDS_VIS_CONFIG`), with its default.",
        "",
        "| Key | Type | Default |",
        "| --- | --- | --- |",
    ]
    for f in dataclasses.fields(Settings):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        lines.append(f"| `{f.name}` | `{f.type}` | `{default}` |".replace("|`", "| `"))
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=_render()))
    return files
