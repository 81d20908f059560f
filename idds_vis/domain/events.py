"""Progress events the agent emits to whoever watches (CLI progress, JSON lines, SSE)."""

from __future__ import annotations

from dataclasses import dataclass

from idds_vis.domain.models import Instance


@dataclass(frozen=True)
class PhaseChanged:
    instance: Instance
