"""The ledger by task: the task name a permalink request carries, and finding records by it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idds_vis.domain.models import VisRequest
from idds_vis.ledger import SqlLedger

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def test_task_name_is_kept_and_records_are_found_by_name_or_id(ledger: SqlLedger) -> None:
    old = VisRequest("100", source="s", task_name="user.jdoe.train/")
    retry = VisRequest("107", source="s", task_name="user.jdoe.train/")
    other = VisRequest("200", source="s")
    first, _ = await ledger.submit(old, T0)
    await ledger.submit(retry, T0 + timedelta(seconds=1))
    await ledger.submit(other, T0 + timedelta(seconds=2))
    assert first.task_name == "user.jdoe.train/"
    assert (await ledger.get(other.key)).task_name is None  # type: ignore[union-attr]
    named = await ledger.find(task_name="user.jdoe.train/")
    assert [i.task_id for i in named] == ["107", "100"]  # newest first
    assert [i.task_id for i in await ledger.find(task_id="200")] == ["200"]
    assert await ledger.find(task_name="user.jdoe.train") == []
    assert await ledger.find(task_id="999") == []
    with pytest.raises(ValueError, match="exactly one"):
        await ledger.find()


async def test_a_ledger_made_before_task_names_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the table as the previous release created it
        db.execute(
            "CREATE TABLE vis_instances (id INTEGER PRIMARY KEY, task_id VARCHAR NOT NULL, "
            "tool VARCHAR(16) NOT NULL, name VARCHAR(63) NOT NULL UNIQUE, phase VARCHAR(16) "
            "NOT NULL, source TEXT, ttl_seconds FLOAT NOT NULL, url TEXT, expires_at DATETIME, "
            "reason TEXT, handle JSON NOT NULL, attempt INTEGER NOT NULL, origin VARCHAR(32) "
            "NOT NULL, requested_by VARCHAR, claimed_by VARCHAR, created_at DATETIME NOT NULL, "
            "updated_at DATETIME NOT NULL, CONSTRAINT uq_vis_instances_key UNIQUE (task_id, tool))"
        )
    ledger = SqlLedger(f"sqlite+aiosqlite:///{path}")
    await ledger.open()
    try:
        inst, created = await ledger.submit(VisRequest("1", source="s", task_name="t.1"), T0)
        assert created and inst.task_name == "t.1"
        assert [i.task_id for i in await ledger.find(task_name="t.1")] == ["1"]
    finally:
        await ledger.close()


async def test_name_task_fills_a_missing_name_and_keeps_an_existing_one(ledger: SqlLedger) -> None:
    unnamed, _ = await ledger.submit(VisRequest("300", source="s"), T0)
    named = await ledger.name_task(unnamed.key, "user.jdoe.train/")
    assert named.task_name == "user.jdoe.train/" and named.phase == unnamed.phase
    assert (await ledger.name_task(unnamed.key, "other")).task_name == "user.jdoe.train/"
    assert [i.task_id for i in await ledger.find(task_name="user.jdoe.train/")] == ["300"]
