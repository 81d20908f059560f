"""Red team, hostile mlflow.db: work the CPU budget does not see.

The guard budgets SQLite's CPU and caps each value at 16 MiB, but a VIRTUAL generated column is
computed at every read: an 8 KiB store whose 40 experiment names are
``printf('%.*c', 8000000, 'x')`` made the layout check allocate 320 MB in Python (a thousand
rows: 8 GB, in the agent every other request shares), each row cheap enough for the budget.
An index on an expression is evaluated, and written to disk, by every UPDATE of the rewrite.
Stored data is bounded too: one query may not bring more than MAX_RESULT_BYTES into memory.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from idds_vis.domain.errors import LimitExceeded, StagingError
from idds_vis.domain.models import StagedArtefacts
from idds_vis.staging import locations, sqlite_guard
from idds_vis.staging.layout import file_store_experiments, sqlite_experiments
from idds_vis.staging.rewrite import rewrite_artifact_locations
from idds_vis.staging.sqlite_guard import HostileStore, open_store
from idds_vis.ui.store import prepare_store

MIB = 1 << 20


def _store(db: Path, experiments_sql: str, rows: int = 40) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(experiments_sql)
        conn.executemany(
            "INSERT INTO experiments (experiment_id, lifecycle_stage) VALUES (?, 'active')",
            [(i,) for i in range(rows)],
        )


def test_a_virtual_generated_column_is_refused_before_it_is_read(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    _store(
        db,
        "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, lifecycle_stage TEXT,"
        " name TEXT GENERATED ALWAYS AS (printf('%.*c', 8000000, 'x')) VIRTUAL)",
    )
    assert db.stat().st_size < 64 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(HostileStore, match=r"generated column experiments\.name"):
            sqlite_experiments(db, "mlflow.db")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"{peak} bytes allocated to refuse it"


def test_a_stored_generated_column_mlflow_does_not_create_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    _store(
        db,
        "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, lifecycle_stage TEXT,"
        " name TEXT, pad TEXT GENERATED ALWAYS AS (printf('%.*c', 1000, name)) STORED)",
        rows=1,
    )
    with pytest.raises(HostileStore, match=r"generated column experiments\.pad"):
        sqlite_experiments(db, "mlflow.db")


def test_an_index_on_an_expression_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    _store(
        db,
        "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, lifecycle_stage TEXT,"
        " name TEXT, artifact_location TEXT)",
        rows=1,
    )
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE INDEX grow ON experiments (printf('%.*c', 8000000, artifact_location))"
        )
    with pytest.raises(HostileStore, match="index on an expression 'grow'"):
        sqlite_experiments(db, "mlflow.db")


def test_mlflows_own_generated_column_passes(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE spans (start_time_unix_nano BIGINT, end_time_unix_nano BIGINT,"
            " duration_ns BIGINT GENERATED ALWAYS AS"
            " (end_time_unix_nano - start_time_unix_nano) STORED)"
        )
        conn.execute("CREATE INDEX by_start ON spans (start_time_unix_nano)")
    with open_store(db, "mlflow.db") as store:
        assert store.check().generated == [("spans", "duration_ns", 3)]


def test_one_query_brings_a_bounded_number_of_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_guard, "MAX_RESULT_BYTES", 1 * MIB)
    db = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 4096,)] * 1024)  # 4 MiB
    with open_store(db, "mlflow.db") as store, pytest.raises(HostileStore, match="bytes in one"):
        store.rows("SELECT v FROM t")


# -- mlruns file stores: YAML aliases ---------------------------------------------------------


def _alias_bomb(levels: int) -> list[str]:
    """Anchors of ten aliases each: ``*a<levels>`` is 10**(levels + 1) strings once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return lines


def test_an_alias_bomb_in_an_experiments_meta_is_not_expanded(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    (mlruns / "1").mkdir(parents=True)
    meta = [*_alias_bomb(5), "experiment_id: '1'", "name: *a5", "lifecycle_stage: active"]
    (mlruns / "1" / "meta.yaml").write_text("\n".join(meta) + "\n")
    assert (mlruns / "1" / "meta.yaml").stat().st_size < 1024
    tracemalloc.start()
    try:
        found = file_store_experiments(mlruns)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found is None  # not an experiment MLflow wrote
    assert peak < 2 * MIB, f"{peak} bytes allocated reading a {1024}-byte file"


def test_the_ui_refuses_yaml_aliases_before_mlflows_migration(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    run = root / "mlruns" / "1" / ("ab" * 16)
    run.mkdir(parents=True)
    (root / "mlruns" / "1" / "meta.yaml").write_text(
        "experiment_id: '1'\nname: train\nlifecycle_stage: active\n"
        f"artifact_location: file://{root}/mlruns/1\n"
    )
    # Small (10**4 strings): the same file with 9 levels would be 10**10 once MLflow copies it.
    (run / "meta.yaml").write_text("\n".join([*_alias_bomb(3), "run_name: *a3"]) + "\n")
    staged = StagedArtefacts(str(root), "file-store", str(root / "mlruns"), ("train",), 1, 1)
    with pytest.raises(StagingError, match="uses YAML aliases"):
        prepare_store(staged)


# -- placing locations: Python work outside SQLite's budget ------------------------------------


def test_placing_locations_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each location was tried suffix by suffix under every mlruns directory of the tree:
    20 locations 60 components deep under 2000 mlruns directories took 114 s of CPU, and a
    store may hold 100000. The lookups are bounded (lowered here so the test stays small)."""
    monkeypatch.setattr(locations, "MAX_LOOKUPS", 5000, raising=False)
    root = tmp_path / "staged"
    for i in range(100):
        (root / f"d{i}" / "mlruns").mkdir(parents=True)
    db = root / "mlflow.db"
    deep = "/" + "/".join(f"p{j}" for j in range(60))
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, artifact_uri TEXT,"
            " lifecycle_stage TEXT)"
        )
        conn.executemany(
            "INSERT INTO runs VALUES (?, 1, ?, 'active')", [(f"r{i}", deep) for i in range(10)]
        )
    with pytest.raises(LimitExceeded, match="lookups in the staged tree"):
        rewrite_artifact_locations(db, root)


def test_placing_locations_stops_at_its_cpu_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the lookup cap the worst tree still cost about a minute of CPU; the placement also
    stops at its own CPU budget (none here, so the first lookups already exceed it)."""
    monkeypatch.setattr(locations, "MAX_PLACEMENT_CPU", -1.0)
    root = tmp_path / "staged"
    (root / "mlruns").mkdir(parents=True)
    db = root / "mlflow.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, artifact_uri TEXT,"
            " lifecycle_stage TEXT)"
        )
        conn.execute("INSERT INTO runs VALUES ('r1', 1, 's3://elsewhere/1/r1/artifacts', 'active')")
    with pytest.raises(LimitExceeded, match="s of CPU, not served"):
        rewrite_artifact_locations(db, root)
