"""Placeholders in a source written by someone else (an iDDS VisualizationWork's author).

``str.format`` on such text runs the author's format spec: ``{workload_id:>2000000000}`` made
the agent allocate 2 GB on its event loop, and ``{task_id.__class__}`` reaches attributes. Only
the plain ``{name}`` forms of the names offered are filled in; anything else stays as written
(and then fails as a source, with a reason)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_FIELD = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: Mapping[str, object]) -> str:
    return _FIELD.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )
