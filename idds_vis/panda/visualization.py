"""``with_visualization``: the task parameters plus a permalink to the task's future UI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.models import DEFAULT_TOOL
from idds_vis.domain.permalink import permalink_url

VISUALIZATION_KEY = "visualization"
ENV_BASE_URL = "IDDS_VIS_URL"


def with_visualization(
    task_params: Mapping[str, Any],
    tool: str = DEFAULT_TOOL,
    ttl: str | timedelta = "24h",
    base_url: str | None = None,
) -> dict[str, Any]:
    """A copy of ``task_params`` with a ``visualization`` permalink and ``pushStatusChanges``.

    BigPanDA shows every task parameter on the task page, so the permalink becomes the link
    to the UI; ``pushStatusChanges`` makes JEDI announce the task's end, which starts the UI.
    The base URL is ``base_url`` or ``$IDDS_VIS_URL``.
    """
    base = base_url or os.environ.get(ENV_BASE_URL)
    if not base:
        raise InvalidRequest(
            f"no idds-vis URL: pass base_url=... or set {ENV_BASE_URL} "
            "(e.g. https://idds-vis.example.org)"
        )
    task_name = task_params.get("taskName")
    if not isinstance(task_name, str) or not task_name.strip():
        raise InvalidRequest("the task parameters have no taskName: the permalink is keyed by it")
    params = dict(task_params)
    owner = task_params.get("userName")
    owner = owner.strip() if isinstance(owner, str) and owner.strip() else None
    params[VISUALIZATION_KEY] = permalink_url(base, task_name, tool, ttl, owner)
    params["pushStatusChanges"] = True
    return params
