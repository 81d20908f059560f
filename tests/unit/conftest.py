"""The ledger on both databases it supports, for every ledger test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from idds_vis.ledger import SqlLedger


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest_asyncio.fixture
async def ledger(ledger_url: str) -> AsyncIterator[SqlLedger]:
    opened = SqlLedger(ledger_url)
    await opened.open()
    yield opened
    await opened.close()
