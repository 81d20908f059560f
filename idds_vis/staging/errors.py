"""Staging failures the domain error module has no class for yet (all are StagingError)."""

from __future__ import annotations

from idds_vis.domain.errors import StagingError


class NotAnArchive(StagingError):
    """The source is a file but not a tar or zip archive we can read."""


class UnsupportedSource(StagingError):
    """The source is neither a local path nor an http(s) URL."""


class StagingInterrupted(StagingError):
    """The staging task was cancelled; the worker thread stopped at its next check."""


class SourceRefused(StagingError):
    """A source named by a message is not one the operator's policy accepts."""
