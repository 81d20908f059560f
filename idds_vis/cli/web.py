"""The web app in the commands: inside ``idds-vis agent`` (when ``web_port`` is set) or alone."""

from __future__ import annotations

import asyncio
import signal

from idds_vis.agent.panda_tasks import PandaStarter
from idds_vis.agent.service import Agent
from idds_vis.api import NoTaskLookup, Starter, WebServer, make_app
from idds_vis.api.catalog.tasks import NoDirectory, PandaDirectory, TaskDirectory
from idds_vis.cli.common import ledger_session, stderr
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_artefacts

DEFAULT_PORT = 8080


def starter_for(settings: Settings, agent: Agent) -> Starter:
    """PanDA's task lookup when a PanDA server is configured; otherwise permalinks of tasks
    with no record are refused with that reason (records made by other intakes still show)."""
    artefacts = build_artefacts(settings)
    return NoTaskLookup() if artefacts is None else PandaStarter(agent, artefacts)


def directory_for(settings: Settings) -> TaskDirectory:
    """Where the catalog checks a task and finds its owner: PanDA, when configured."""
    artefacts = build_artefacts(settings)
    return NoDirectory() if artefacts is None else PandaDirectory(artefacts)


async def start_web(settings: Settings, agent: Agent) -> WebServer | None:
    """Serve the web app next to a running agent, when the settings give it a port."""
    if settings.web_port is None:
        return None
    app = make_app(agent, settings, starter_for(settings, agent),
                   directory=directory_for(settings))  # fmt: skip
    server = WebServer(app, settings.web_host, settings.web_port)
    url = await server.start()
    public = f" (public {settings.web_url})" if settings.web_url else ""
    stderr.print(f"web app on {url}{public}")
    return server


async def serve_web_alone(settings: Settings) -> None:
    """The web app over the agent's ledger, in its own process (the agent runs elsewhere)."""
    if settings.web_port is None:
        settings = settings.replace(web_port=DEFAULT_PORT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ledger_session(settings) as agent:
        server = await start_web(settings, agent)
        assert server is not None
        try:
            await stop.wait()
        finally:
            await server.stop()
