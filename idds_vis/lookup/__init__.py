"""Lookups: adapters that read what PanDA and iDDS know about a task (the ports in ports/tasks)."""

from idds_vis.lookup.panda import PandaClientTasks, PandaSettings

__all__ = ["PandaClientTasks", "PandaSettings"]
