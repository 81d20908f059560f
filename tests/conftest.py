"""Fixtures shared by every test directory. One section per concern."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from idds_vis.ledger import async_url
from tests.activemq import activemq_broker  # noqa: F401  (a session fixture)
from tests.idds_server import idds_server  # noqa: F401  (a session fixture: a real iDDS)
from tests.panda_server import panda_server  # noqa: F401  (a session fixture)
from tests.pg import ENV_URL, PostgresMissing, find_bin_dir, fresh_database, throwaway_postgres
from tests.redis import redis_server  # noqa: F401  (a session fixture)

# --- PostgreSQL ------------------------------------------------------------------------------
# `pg_server` (session): URL of a server for the whole run, started on first use only.
# `pg_url` (function): URL of a fresh, empty database on it, dropped after the test.


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """``$IDDS_VIS_TEST_PG_URL`` when set, else a throwaway server from Debian's packages."""
    given = os.environ.get(ENV_URL)
    if given:
        yield async_url(given)
        return
    try:
        bin_dir = find_bin_dir()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with throwaway_postgres(bin_dir) as url:
        yield url


@pytest_asyncio.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    async with fresh_database(pg_server) as url:
        yield url
