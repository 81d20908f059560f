"""Staging: fetch a finished task's MLflow data into a private directory, safely.

The names below are imported on first use (PEP 562), not with the package: a UI process
that only prepares a staged store (``ui/store.py``: a few of these modules) does not load
the stagers and their HTTP, S3 and Rucio clients (~1.6 MB, ~0.1 s of a warm hand-over).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idds_vis.staging.archive_stager import ArchiveStager
    from idds_vis.staging.errors import NotAnArchive, UnsupportedSource
    from idds_vis.staging.layout import Layout, detect_layout
    from idds_vis.staging.manifest import MANIFEST, write_manifest
    from idds_vis.staging.redact import redact_url
    from idds_vis.staging.rewrite import rewrite_artifact_locations

_WHERE = {
    "ArchiveStager": "archive_stager",
    "NotAnArchive": "errors",
    "UnsupportedSource": "errors",
    "Layout": "layout",
    "detect_layout": "layout",
    "MANIFEST": "manifest",
    "write_manifest": "manifest",
    "redact_url": "redact",
    "rewrite_artifact_locations": "rewrite",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "MANIFEST",
    "ArchiveStager",
    "Layout",
    "NotAnArchive",
    "UnsupportedSource",
    "detect_layout",
    "redact_url",
    "rewrite_artifact_locations",
    "write_manifest",
]
