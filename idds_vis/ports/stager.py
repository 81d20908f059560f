from __future__ import annotations

from pathlib import Path
from typing import Protocol

from idds_vis.domain.models import StagedArtefacts


class Stager(Protocol):
    async def stage(self, source: str, dest: Path) -> StagedArtefacts:
        """Fetch and unpack ``source`` into ``dest`` (created, private) safely.

        Raises a StagingError subclass whose message names the cause.
        """
        ...
