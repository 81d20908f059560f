"""The stager for sources that a broker message named (``vis_request``, iDDS VisualizationWork).

It checks the source against the operator's ``SourcePolicy`` again at staging time (a record
may predate a policy change, or come from an intake that did not check), then stages through
the inner stager with every http(s) download under the address guard (``download.guarded``):
loopback, private and link-local addresses are refused after name resolution, at connect time,
on every redirect, unless ``allow_private_addresses`` lists them.
"""

from __future__ import annotations

from pathlib import Path

from idds_vis.domain.models import StagedArtefacts
from idds_vis.domain.source_policy import SourcePolicy
from idds_vis.ports.stager import Stager
from idds_vis.staging.download import guarded
from idds_vis.staging.errors import SourceRefused


class GuardedStager:
    def __init__(self, inner: Stager, policy: SourcePolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def stage(self, source: str, dest: Path) -> StagedArtefacts:
        verdict = self.policy.check_message_source(source)
        if not verdict:
            raise SourceRefused(f"artefact source refused: {verdict.reason}")
        with guarded(self.policy.addresses):
            return await self.inner.stage(source, dest)
