"""MkDocs hook: writes reference/configuration.md at build time from the settings schema.

The page is generated (never committed), so it cannot drift from the code: it is the output of
``idds_vis.runtime.config_reference.render_markdown()``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/configuration.md"
_ROOT = Path(__file__).resolve().parents[2]


def _render() -> str:
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    from idds_vis.runtime.config_reference import render_markdown

    return str(render_markdown())


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=_render()))
    return files
