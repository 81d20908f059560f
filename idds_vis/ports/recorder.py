from __future__ import annotations

from typing import Protocol

from idds_vis.domain.models import Instance


class Recorder(Protocol):
    """Publishes a ready or ended instance where people look (task metadata, iDDS output)."""

    async def record(self, instance: Instance) -> None: ...
