"""A crafted mlflow.db must fail staging (or serving) with a reason, and free its worker.

Issue 15, class 2: an ``experiments`` that is a recursive VIEW made the layout check's SELECT
never return; the thread running it could not be cancelled, so four such requests took every
pipeline worker. Each store here must fail with a one-line reason a person can read; the
call must return (no assertion on how long it took: the budget is CPU seconds).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from idds_vis.domain.errors import NoMlflowData, StagingError
from idds_vis.domain.models import StagedArtefacts, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.staging import ArchiveStager, detect_layout
from idds_vis.staging.sqlite_guard import HostileStore, open_store
from idds_vis.ui.store import prepare_store
from tests.fakes import FakeDeployer, make_agent, wait_for_all

RUN = "c3" * 16
# Rows without end: every SELECT that reaches this view runs until something stops it.
ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
    " SELECT 'e' || x AS name, 'active' AS lifecycle_stage, x AS experiment_id,"
    " NULL AS artifact_location FROM c"
)


def base_store(db: Path, *, experiments: bool = True) -> None:
    """The tables and columns of a minimal MLflow store, one run with a local location."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db)) as conn, conn:
        if experiments:
            conn.execute(
                "CREATE TABLE experiments (experiment_id INTEGER, name TEXT,"
                " artifact_location TEXT, lifecycle_stage TEXT)"
            )
            conn.execute(
                "INSERT INTO experiments VALUES (1, 'train', '/home/u/mlruns/1', 'active')"
            )
        conn.execute(
            "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, artifact_uri TEXT,"
            " lifecycle_stage TEXT)"
        )
        conn.execute(
            "INSERT INTO runs VALUES (?, 1, ?, 'active')",
            (RUN, f"/home/u/mlruns/1/{RUN}/artifacts"),
        )


def recursive_view(db: Path) -> None:
    base_store(db, experiments=False)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"CREATE VIEW experiments AS {ENDLESS}")


def huge_view(db: Path) -> None:
    # Finite, but 10^18 rows: a SELECT of it exhausts time or memory long before its end.
    base_store(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("ALTER TABLE runs RENAME TO real_runs")
        conn.execute(
            "CREATE VIEW runs AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 1000000000000000000) SELECT printf('%032d', x) AS run_uuid,"
            " 1 AS experiment_id, '/x' AS artifact_uri, 'active' AS lifecycle_stage FROM c"
        )


def trigger(db: Path) -> None:
    # Fires on the rewrite's UPDATE of a run: endless work, in the writer's transaction.
    base_store(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE sink (x)")
        conn.execute(
            "CREATE TRIGGER grow AFTER UPDATE ON runs BEGIN"
            f" INSERT INTO sink SELECT name FROM ({ENDLESS}); END"
        )


def virtual_table(db: Path) -> None:
    base_store(db, experiments=False)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE VIRTUAL TABLE experiments USING fts4(name, lifecycle_stage)")
        conn.execute("INSERT INTO experiments VALUES ('train', 'active')")


def huge_generated_column(db: Path) -> None:
    # A real table whose column is computed when read: 64 MiB per row, made on demand.
    base_store(db, experiments=False)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE experiments (experiment_id INTEGER, lifecycle_stage TEXT,"
            " artifact_location TEXT, name TEXT GENERATED ALWAYS AS (hex(zeroblob(33554432))))"
        )
        conn.execute(
            "INSERT INTO experiments (experiment_id, lifecycle_stage) VALUES (1, 'active')"
        )


def corrupted(db: Path) -> None:
    base_store(db)
    data = bytearray(db.read_bytes())
    data[100:4096] = bytes((i * 37) % 251 for i in range(100, 4096))  # page 1 after the header
    db.write_bytes(bytes(data))


def not_sqlite(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"PK\x03\x04 this is a zip, or anything, named mlflow.db\n" * 100)


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "recursive view": (recursive_view, "mlflow.db is refused: it has a view 'experiments'"),
    "huge view": (huge_view, "mlflow.db is refused: it has a view 'runs'"),
    "trigger": (trigger, "it has a trigger 'grow' that MLflow does not create"),
    "virtual table": (virtual_table, "it has a virtual table 'experiments'"),
    "generated column": (
        huge_generated_column,
        "it has a generated column experiments.name that MLflow does not create",
    ),
    "corrupted": (corrupted, "job/mlflow.db is not a readable SQLite store"),
    "not sqlite": (not_sqlite, "job/mlflow.db is not an SQLite database"),
}


def one_line(reason: str) -> str:
    assert "\n" not in reason and len(reason) < 300, reason
    return reason


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_store_fails_staging_with_a_reason(tmp_path: Path, case: str) -> None:
    make, expected = HOSTILE[case]
    source = tmp_path / "source"
    make(source / "job" / "mlflow.db")
    with pytest.raises(StagingError) as caught:
        await ArchiveStager().stage(str(source), tmp_path / "staged")
    assert expected in one_line(caught.value.reason)
    if case == "not sqlite":
        assert isinstance(caught.value, NoMlflowData)


def test_another_tools_hostile_database_is_skipped(tmp_path: Path) -> None:
    # optuna.db and friends may be anything; only an mlflow.db must be a plain store.
    recursive_view(tmp_path / "job" / "optuna.db")
    base_store(tmp_path / "job" / "mlflow.db")
    layout = detect_layout(tmp_path)
    assert layout.store_path == tmp_path / "job" / "mlflow.db"
    assert layout.experiments == ("train",)


def test_a_statement_over_the_cpu_budget_is_stopped(tmp_path: Path) -> None:
    # What the schema check cannot see (a scan of a real table of any size, a page maze in a
    # damaged file) still ends: SQLite's VM calls the budget check while it runs.
    db = tmp_path / "mlflow.db"
    base_store(db)
    over = pytest.raises(HostileStore, match=r"mlflow\.db: reading it took more than 0\.2 s")
    with open_store(db, "mlflow.db", cpu_budget=0.2) as store, over:
        store.rows(f"SELECT count(*) FROM ({ENDLESS})")


def test_a_store_over_the_row_cap_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    base_store(db)
    with open_store(db, "mlflow.db") as store, pytest.raises(HostileStore, match="than 10 rows"):
        store.rows(f"SELECT name FROM ({ENDLESS})", max_rows=10)


def test_a_store_with_too_many_locations_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Placing a location is Python work outside SQLite's budget: their number is capped.
    from idds_vis.staging import rewrite

    monkeypatch.setattr(rewrite, "MAX_LOCATIONS", 1)
    db = tmp_path / "job" / "mlflow.db"
    base_store(db)
    with pytest.raises(StagingError, match="more than 1 artefact locations, not served"):
        rewrite.rewrite_artifact_locations(db, tmp_path)


def test_a_location_the_update_misses_fails_the_rewrite(tmp_path: Path) -> None:
    # A column named rowid shadows SQLite's rowid: the UPDATE by rowid hits no row, and the
    # foreign location would stay. The check after the write sees it.
    from idds_vis.staging import rewrite_artifact_locations

    db = tmp_path / "job" / "mlflow.db"
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE runs (rowid INTEGER, run_uuid TEXT, experiment_id INTEGER,"
            " artifact_uri TEXT)"
        )
        conn.execute("INSERT INTO runs VALUES (NULL, ?, 1, 's3://someone-elses-bucket/x')", (RUN,))
    with pytest.raises(StagingError, match=r"runs\.artifact_uri could not be rewritten"):
        rewrite_artifact_locations(db, tmp_path)


def test_serving_refuses_a_store_swapped_after_staging(tmp_path: Path) -> None:
    # The UI process prepares its own copy (and MLflow upgrades it): checked first too.
    root = tmp_path / "staged"
    recursive_view(root / "job" / "mlflow.db")
    staged = StagedArtefacts(str(root), "sqlite", str(root / "job" / "mlflow.db"), (), 1, 1)
    with pytest.raises(StagingError, match=r"mlflow\.db is refused: it has a view 'experiments'"):
        prepare_store(staged)


async def test_hostile_requests_leave_the_workers_free(tmp_path: Path) -> None:
    """4 workers, 4 stores with an endless view, then a good one: the good one is served."""
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    deployer = FakeDeployer(tmp_path / "instances")
    agent = make_agent(ledger, deployer, stager=ArchiveStager(), workers=4)  # type: ignore[arg-type]
    hostile = [f"hostile-{i}" for i in range(4)]
    for task in hostile:
        recursive_view(tmp_path / task / "job" / "mlflow.db")
    good = tmp_path / "good" / "job"
    base_store(good / "mlflow.db")
    (good / "mlruns" / "1" / RUN / "artifacts").mkdir(parents=True)
    events = agent.events.subscribe()
    await agent.start()
    try:
        for task in hostile:
            await agent.submit(VisRequest(task, source=str(tmp_path / task)))
        await agent.submit(
            VisRequest("good", source=str(tmp_path / "good"), ttl=timedelta(hours=1))
        )
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            done = await wait_for_all(events, {*hostile, "good"}, {Phase.READY, Phase.FAILED})
        for task in hostile:
            assert done[task].phase is Phase.FAILED
            assert "refused: it has a view 'experiments'" in one_line(done[task].reason or "")
        assert done["good"].phase is Phase.READY, done["good"].reason
    finally:
        await agent.stop()
        await ledger.close()


def test_the_good_store_keeps_working(tmp_path: Path) -> None:
    # The defences refuse nothing MLflow itself writes (its own trigger included).
    from tests.mlflow_data import sqlite_template

    root = tmp_path / "staged"
    shutil.copytree(sqlite_template(), root / "job")
    layout = detect_layout(root)
    assert layout.layout == "sqlite" and layout.experiments
    with closing(sqlite3.connect(layout.store_path)) as conn:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    assert triggers == [("prevent_secrets_aad_mutation",)]
