"""For workflow authors: visualize a training work's results from inside an iDDS workflow.

    from idds_vis.idds import add_visualization
    vis, teardown = add_visualization(workflow, train, ttl="24h")

Everything here runs on the iDDS server too (it rebuilds works by importing this package), so
it imports only idds-workflow, stomp.py and idds-vis's pure domain.
"""

from idds_vis.idds.workflow import add_visualization
from idds_vis.idds.works import TeardownWork, VisualizationWork

__all__ = ["TeardownWork", "VisualizationWork", "add_visualization"]
