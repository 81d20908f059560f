"""Typed keys of what the web app's handlers share (``request.app[KEY]``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from idds_vis.agent.service import Agent
from idds_vis.api.refusals import Refusals
from idds_vis.api.starter import Starter
from idds_vis.runtime.config import Settings

AGENT = web.AppKey("agent", Agent)
SETTINGS = web.AppKey("settings", Settings)
STARTER: web.AppKey[Starter] = web.AppKey("starter")
REFUSALS = web.AppKey("refusals", Refusals)
# Seconds between ledger re-reads of a live progress stream: the agent's in-process events
# arrive at once, this catches changes made by another process (``idds-vis web`` alone).
POLL_INTERVAL = web.AppKey("poll_interval", float)
# The live progress streams being served, so shutting down does not wait on open pages.
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
