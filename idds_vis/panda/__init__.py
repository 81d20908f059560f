"""For workflow authors: put the idds-vis permalink into PanDA task parameters.

Imports only ``idds_vis.domain`` and the standard library, so a submission host needs nothing
else from idds-vis.
"""

from idds_vis.panda.visualization import ENV_BASE_URL, VISUALIZATION_KEY, with_visualization

__all__ = ["ENV_BASE_URL", "VISUALIZATION_KEY", "with_visualization"]
