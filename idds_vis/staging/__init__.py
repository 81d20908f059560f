"""Staging: fetch a finished task's MLflow data into a private directory, safely."""

from idds_vis.staging.archive_stager import ArchiveStager
from idds_vis.staging.errors import NotAnArchive, UnsupportedSource
from idds_vis.staging.layout import Layout, detect_layout
from idds_vis.staging.manifest import MANIFEST, write_manifest
from idds_vis.staging.redact import redact_url
from idds_vis.staging.rewrite import rewrite_artifact_locations

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
