"""What staging found, kept beside the data so the UI process need not detect it again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from idds_vis.domain.models import StagedArtefacts

STAGED_INFO = ".idds-vis/staged.json"


def write_staged_info(staged: StagedArtefacts) -> None:
    path = Path(staged.root) / STAGED_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(staged)))


def read_staged_info(root: Path) -> StagedArtefacts:
    data = json.loads((root / STAGED_INFO).read_text())
    data["experiments"] = tuple(data["experiments"])
    return StagedArtefacts(**data)
