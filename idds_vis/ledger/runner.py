"""Where the ledger's SQL runs: its methods are written once as sync functions of a Connection.

- A SQLite file: a sync engine (pysqlite) driven from two threads of our own, one for
  transactions that write and one for reads (WAL lets them run side by side). A whole method
  is one hop to its thread and back. Through aiosqlite every statement was four hops (cursor,
  execute, fetch, close) and each commit another, and on this kind of machine a hop between
  threads costs 60-200 µs of CPU: a request's claim and four transitions took 11-12 ms of CPU,
  one thread hop per transaction takes 4-5 ms (tests/bench/bench_ledger.py).
- PostgreSQL (and an in-memory SQLite): the async engine, with the function run through
  ``AsyncConnection.run_sync``; asyncpg has no thread to hop to.

A caller cancelled while its function runs in a thread does not stop it: the transaction
commits or rolls back as a whole, as it would after a crash of the caller. Everything the
ledger writes is idempotent or checked against the phase it read for that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from idds_vis.ledger.engine import sqlite_pragmas

P = ParamSpec("P")
T = TypeVar("T")


class Runner:
    """Runs ``fn(conn, *args)`` in a transaction (``write``) or on a connection (``read``)."""

    def __init__(self, url: URL, engine: AsyncEngine, sqlite_file: bool) -> None:
        self._async = engine
        self._sync: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        if sqlite_file:
            self._sync = create_engine(url.set(drivername="sqlite+pysqlite"))
            event.listen(self._sync, "connect", sqlite_pragmas)

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._run(lambda conn: fn(conn, *args, **kwargs), write=True)

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._run(lambda conn: fn(conn, *args, **kwargs), write=False)

    async def _run(self, call: Callable[[Connection], T], *, write: bool) -> T:
        if self._sync is None:
            async with self._async.begin() if write else self._async.connect() as conn:
                return await conn.run_sync(call)
        if write:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="idds-vis-ledger-write")
            return await self._in(self._writer, _in_transaction, self._sync, call)
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="idds-vis-ledger-read")
        return await self._in(self._reader, _on_connection, self._sync, call)

    async def close(self) -> None:
        """Close the connections; the runner may be used again afterwards (as an engine may)."""
        pools = [pool for pool in (self._reader, self._writer) if pool is not None]
        self._reader = self._writer = None
        sync = self._sync

        def finish() -> None:
            for pool in pools:
                pool.shutdown(wait=True)  # after the work already queued
            if sync is not None:
                sync.dispose()  # the last close of a WAL database checkpoints: file I/O

        await asyncio.to_thread(finish)
        await self._async.dispose()

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _in_transaction(engine: Engine, call: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return call(conn)


def _on_connection(engine: Engine, call: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return call(conn)
