"""Errors whose message is a reason a physicist can read (it is stored and shown as is)."""

from __future__ import annotations


class VisError(Exception):
    """Base class: ``str(error)`` is the reason shown to users."""

    @property
    def reason(self) -> str:
        return str(self)


class InvalidRequest(VisError):
    """The request itself is wrong (bad TTL, unknown tool, empty task id...)."""


class InvalidTransition(VisError):
    """A phase change the state machine does not allow."""


class NotFound(VisError):
    """No such instance."""


class StagingError(VisError):
    """The artefacts could not be staged; the message names the cause."""


class SourceUnreachable(StagingError):
    """The artefact source does not exist or does not answer."""


class UnsafeArchive(StagingError):
    """The archive tries to write outside its directory (.., absolute path, link out)."""


class LimitExceeded(StagingError):
    """The artefacts are over the configured byte or file-count cap."""


class NoMlflowData(StagingError):
    """The artefacts hold no MLflow tracking data."""


class DeployError(VisError):
    """The UI could not be started."""


class NotReachable(DeployError):
    """The UI started but its public URL does not serve what a user needs."""
