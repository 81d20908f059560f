"""Engine creation: the SQLite settings that let the CLI and the agent share one file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Long enough to ride out another process's write transaction (they are all short), short
# enough that a wedged writer shows up as an error rather than a hang.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    # The agent runs for days; a PostgreSQL restart must not leave it with dead connections.
    return create_async_engine(url, pool_pre_ping=True)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers (the CLI, the web app) run while the agent writes.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
