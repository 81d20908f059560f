"""The web app (aiohttp): permalink pages with live progress, the monitor's JSON and snippet."""

from idds_vis.api.app import make_app
from idds_vis.api.server import WebServer, serving
from idds_vis.api.starter import NoTaskLookup, Starter

__all__ = ["NoTaskLookup", "Starter", "WebServer", "make_app", "serving"]
