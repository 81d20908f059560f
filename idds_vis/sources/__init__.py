"""Message sources: adapters that bring broker messages to the intake (MessageSource port)."""

from idds_vis.sources.stomp import StompSettings, StompSource

__all__ = ["StompSettings", "StompSource"]
