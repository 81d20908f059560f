"""The long-running commands: ``idds-vis agent`` (with the web app when ``web_port`` is set)
and ``idds-vis web`` (the web app alone over the agent's ledger).

They log in ``log_format`` from their first line to their last (the start-up lines, the
shutdown note, and their errors: one line each, JSON in JSON mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from idds_vis.agent.health import add_running_checks, health_of
from idds_vis.agent.panda_tasks import PandaStarter
from idds_vis.agent.service import Agent
from idds_vis.api import NoTaskLookup, Starter, WebServer, make_app
from idds_vis.api.catalog.tasks import NoDirectory, PandaDirectory, TaskDirectory
from idds_vis.cli.common import ledger_session
from idds_vis.domain.errors import InvalidRequest, VisError
from idds_vis.domain.phases import LIVE
from idds_vis.runtime.config import Settings
from idds_vis.runtime.logs import fail
from idds_vis.runtime.wiring import (
    after_stop,
    agent_lock,
    build_agent,
    build_artefacts,
    build_intake,
    check_cluster_access,
    free_dead_leases,
    open_ledger,
)

DEFAULT_PORT = 8080
REFUSED = 1  # the exit code of a start the settings or the machine refuse (cli/exits.FAILED)
log = logging.getLogger("idds_vis.cli")


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
    try:  # its settings (rate_limit, trusted_proxies, oidc_*) are checked as it is built
        app = make_app(agent, settings, starter_for(settings, agent),
                       directory=directory_for(settings))  # fmt: skip
    except ValueError as exc:
        raise InvalidRequest(f"web app settings: {exc}") from None
    server = WebServer(app, settings.web_host, settings.web_port)
    try:
        url = await server.start()
    except OSError as exc:  # a busy port, an address not on this machine, a privileged port
        reason = os.strerror(exc.errno) if exc.errno else "cannot listen there"
        raise InvalidRequest(
            f"cannot serve the web app on {settings.web_host}:{settings.web_port}: {reason}"
            " (settings web_host, web_port)"
        ) from None
    log.info("web app on %s (public URL %s)", url, settings.web_url or url)
    return server


def cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on now (a busy port, a name that does not resolve,
    an address not on this machine), as one line; None when it can. For a command to say so at
    once rather than after minutes of staging (the server's own bind still decides)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot serve on {host}:{port}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(address)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else "cannot bind there"
            return f"cannot serve on {host}:{port}: {reason}"
    return None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_agent(settings: Settings) -> None:
    """The agent until SIGTERM or Ctrl-C; refused when another agent runs on its SQLite
    ledger. On the way out it says how many UIs keep running and who ends them."""
    with agent_lock(settings):
        check_cluster_access(settings)
        service = build_agent(settings)
        intake = build_intake(settings, service)
        # Everything built so far lives as long as the process: keep it out of the collector's
        # scans (reconcile of 10,000 UIs: ~1.9 s CPU -> ~1.2 s, tests/bench/bench_kube.py).
        gc.freeze()
        stop = _stop_on_signals()
        await open_ledger(service.ledger, settings)  # unreachable: one line naming it
        await free_dead_leases(settings, service.ledger)  # SQLite: a dead agent's, if any
        await service.start()
        add_running_checks(health_of(service), service, intake[0] if intake else None)
        intake_task = None
        web_app = None
        running = False
        try:
            if intake is not None:
                source, consumer = intake
                await source.start()
                intake_task = asyncio.create_task(consumer.run())
                await source.wait_connected()  # subscribed: from now on nothing sent is missed
            web_app = await start_web(settings, service)  # None unless web_port is set
            log.info("agent running; ledger %s", settings.db_url)
            running = True
            await stop.wait()
            log.info("agent stopping")
        finally:
            if web_app is not None:
                await web_app.stop()
            if intake is not None and intake_task is not None:
                intake_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await intake_task
                await intake[0].stop()
            await service.stop()
            try:
                if running:  # UIs outlive the agent: say so, and who ends them
                    log.info(after_stop(settings, len(await service.ledger.list(LIVE))))
            finally:
                await service.ledger.close()


async def serve_web_alone(settings: Settings) -> None:
    """The web app over the agent's ledger, in its own process (the agent runs elsewhere)."""
    if settings.web_port is None:
        settings = settings.replace(web_port=DEFAULT_PORT)
    stop = _stop_on_signals()
    async with ledger_session(settings) as agent:
        server = await start_web(settings, agent)
        assert server is not None
        try:
            await stop.wait()
            log.info("web app stopping")
        finally:
            await server.stop()


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a long-running command: a refusal (bad settings, a busy port, another agent on the
    SQLite ledger, a ledger it cannot open) is ONE line on stderr, in the log format, and
    exit code 1."""
    try:
        asyncio.run(main())
    except VisError as exc:
        fail(str(exc), REFUSED)
    except OSError as exc:  # e.g. the state dir or the ledger's database cannot be reached
        reason = os.strerror(exc.errno) if exc.errno else "an operating system error"
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"cannot start: {reason}{where}", REFUSED)
    except Exception as exc:  # a bug: its traceback goes into the log (one JSON line there)
        log.critical("stopped on an unexpected %s: %s", type(exc).__name__, exc, exc_info=True)
        raise SystemExit(REFUSED) from None
