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
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

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
        self._writer: _Lane | None = None
        self._reader: _Lane | None = None
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
            lane = self._writer = self._writer or _Lane("idds-vis-ledger-write", self._sync, True)
        else:
            lane = self._reader = self._reader or _Lane("idds-vis-ledger-read", self._sync, False)
        return await asyncio.get_running_loop().run_in_executor(lane.pool, lane.run, call)

    async def close(self) -> None:
        """Close the connections; the runner may be used again afterwards (as an engine may)."""
        lanes = [lane for lane in (self._reader, self._writer) if lane is not None]
        self._reader = self._writer = None
        sync = self._sync

        def finish() -> None:
            for lane in lanes:
                lane.close()  # after the work already queued
            if sync is not None:
                sync.dispose()  # the last close of a WAL database checkpoints: file I/O

        await asyncio.to_thread(finish)
        await self._async.dispose()


class _Lane:
    """One thread and the connection it keeps open from one call to the next.

    Checking a connection out of the pool and back in (with its reset) for every call was a
    fifth of a transaction's CPU. A read's transaction is ended after the call: an open one
    would keep its WAL snapshot, and with it every checkpoint, waiting.
    """

    def __init__(self, name: str, engine: Engine, write: bool) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.engine = engine
        self.write = write
        self.conn: Connection | None = None  # touched only by the lane's thread (and close)

    def run(self, call: Callable[[Connection], T]) -> T:
        conn = self.conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self.conn = self.engine.connect()
        try:
            if self.write:
                with conn.begin():
                    return call(conn)
            try:
                return call(conn)
            finally:
                conn.rollback()
        except BaseException:
            if conn.invalidated or conn.in_transaction():  # not cleanly ended: start afresh
                self._drop()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self._drop()

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
