from __future__ import annotations

from pathlib import Path
from typing import Protocol

from idds_vis.domain.models import Deployment, Instance, RunningUI, StagedArtefacts


class Deployer(Protocol):
    """Runs one UI per instance and finds them again after a restart."""

    name: str

    def staging_dir(self, instance: Instance) -> Path | None:
        """Where the agent stages the data, or None when the UI stages it itself (a pod)."""
        ...

    async def deploy(self, instance: Instance, staged: StagedArtefacts | None) -> Deployment:
        """Start (or adopt) the UI for ``instance``; idempotent by ``instance.name``."""
        ...

    async def wait_started(
        self, instance: Instance, deployment: Deployment, timeout: float
    ) -> None:
        """Return once the UI answers its health check; raise DeployError with a reason."""
        ...

    async def record_expiry(self, instance: Instance) -> None:
        """Put ``instance.expires_at`` where an in-cluster janitor can see it (may do nothing)."""
        ...

    async def delete(self, instance: Instance) -> None:
        """Stop the UI and remove what it left; a missing UI is success."""
        ...

    async def roll_to_current(self, ui: RunningUI) -> bool:
        """Bring a running UI to the configured UI version; True if it had to roll."""
        ...

    async def running(self) -> list[RunningUI]:
        """Every UI this deployer manages that runs now."""
        ...

    async def delete_by_name(self, name: str) -> None:
        """Remove an orphan (a UI with no live ledger record)."""
        ...


class ReadinessProbe(Protocol):
    async def verify(self, deployment: Deployment, experiments: tuple[str, ...]) -> None:
        """Raise NotReachable unless the public URL serves the UI, a static asset and the data."""
        ...
