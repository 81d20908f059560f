"""The interfaces the agent talks to; adapters implement them and the runtime wires them in."""

from idds_vis.ports.clock import Clock
from idds_vis.ports.deployer import Deployer, ReadinessProbe
from idds_vis.ports.ledger import Ledger
from idds_vis.ports.recorder import Recorder
from idds_vis.ports.source import Delivery, MessageSource
from idds_vis.ports.stager import Stager

__all__ = [
    "Clock",
    "Delivery",
    "Deployer",
    "Ledger",
    "MessageSource",
    "ReadinessProbe",
    "Recorder",
    "Stager",
]
