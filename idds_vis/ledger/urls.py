"""Ledger URLs: people write ``sqlite:///`` or ``postgresql://``; the ledger needs async drivers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def parse_async_url(url: str) -> URL:
    if "://" not in url:
        # A bare path is what a person types for a local ledger file.
        return URL.create("sqlite+aiosqlite", database=str(Path(url).expanduser()))
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported ledger URL {parsed.render_as_string(hide_password=True)}: "
            "use sqlite:///path/ledger.db or postgresql://user@host/db"
        )
    return parsed.set(drivername=driver)


def async_url(url: str) -> str:
    """The same URL with the async driver (aiosqlite or asyncpg) the ledger runs on."""
    return parse_async_url(url).render_as_string(hide_password=False)


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-backed SQLite URL, else None (PostgreSQL, in-memory)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)
