"""Point an MLflow SQLite store's artefact locations at the staged copy of the artefacts.

A store copied off the training machine keeps that machine's absolute paths, so the UI
lists every run and 404s on every artefact. Pure sqlite3: the agent does not import mlflow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from idds_vis.staging.locations import Placer, Wanted, location_kind, location_parts, wanted

Tail = Callable[[str, str], tuple[str, ...]]


@dataclass(frozen=True)
class _Column:
    table: str
    column: str
    own_id: str | None  # the row's own id column, which MLflow puts in the path
    tail: Tail  # MLflow's layout below the artefact root, for rows nothing matched


# mlflow 3.17.2 names (store/tracking/dbmodels/models.py, model_registry/dbmodels/models.py).
_COLUMNS = (
    _Column("runs", "artifact_uri", "run_uuid", lambda e, o: (e, o, "artifacts")),
    _Column(
        "logged_models", "artifact_location", "model_id", lambda e, o: (e, "models", o, "artifacts")
    ),
    _Column("experiments", "artifact_location", None, lambda e, _o: (e,)),
    _Column("model_versions", "storage_location", None, lambda _e, _o: ()),
    _Column("model_versions", "source", None, lambda _e, _o: ()),
)


@dataclass(frozen=True)
class _Cell:
    table: str
    column: str
    rowid: int
    original: str
    want: Wanted


def _schema(conn: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}


def _select(col: _Column, schema: dict[str, set[str]]) -> str | None:
    have = schema.get(col.table, set())
    if col.column not in have:
        return None
    own = col.own_id if col.own_id in have else "NULL"
    if "experiment_id" in have:
        return f"SELECT rowid, {col.column}, experiment_id, {own} FROM {col.table}"
    # model_versions has no experiment id of its own; its run has one.
    if "run_id" in have and {"run_uuid", "experiment_id"} <= schema.get("runs", set()):
        return (
            f"SELECT t.rowid, t.{col.column}, r.experiment_id, NULL FROM {col.table} t"
            " LEFT JOIN runs r ON r.run_uuid = t.run_id"
        )
    return f"SELECT rowid, {col.column}, NULL, {own} FROM {col.table}"


def _cells(conn: sqlite3.Connection) -> list[_Cell]:
    schema = _schema(conn)
    cells: list[_Cell] = []
    for col in _COLUMNS:
        query = _select(col, schema)
        if query is None:
            continue
        for rowid, value, exp, own in conn.execute(query):
            parts = location_parts(value) if isinstance(value, str) else None
            if parts is None:
                continue
            exp_id = None if exp is None else str(exp)
            own_id = None if own is None else str(own)
            tail = col.tail(exp_id or "", own_id or "") if exp_id else ()
            want = wanted(location_kind(value), parts, exp_id, own_id, tuple(c for c in tail if c))
            cells.append(_Cell(col.table, col.column, rowid, value, want))
    return cells


def rewrite_artifact_locations(db_path: Path, staged_root: Path) -> int:
    """Rewrite file-like artefact locations to file:// URIs under staged_root.

    Each location goes to the longest suffix of its path that exists under staged_root;
    failing that, to where MLflow's layout puts it under the artefact root the other rows
    were found in. Returns the number of rows changed.
    """
    placer = Placer(staged_root, db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        cells = _cells(conn)
        # Matches first, so the fallbacks can use the artefact roots the matches revealed.
        found = {id(c): placer.find(c.want) for c in cells}
        changed: set[tuple[str, int]] = set()
        with conn:
            for cell in cells:
                place = found[id(cell)] or placer.fallback(cell.want)
                uri = place.as_uri()
                if uri == cell.original:
                    continue
                conn.execute(
                    f"UPDATE {cell.table} SET {cell.column} = ? WHERE rowid = ?",
                    (uri, cell.rowid),
                )
                changed.add((cell.table, cell.rowid))
    return len(changed)
