"""Point every location an MLflow SQLite store holds at the staged copy, or blank it.

A store copied off the training machine keeps that machine's absolute paths, so the UI
lists every run and 404s on every artefact. Worse, a location of another scheme
(``s3://someone-elses-bucket/…``, ``http://…``, ``runs:/…``) makes the UI fetch from there
with whatever credentials it has. So every artefact location MLflow reads is rewritten to a
``file://`` URI under the staged root (the matching staged directory, else where MLflow's
layout puts it), and the other URLs a store may hold (webhooks, MCP endpoints, dataset
sources, gateway auth configs) are blanked. The store is read and written under
``sqlite_guard``'s checks and budget, and checked again after the write.

Pure sqlite3: the agent does not import mlflow.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from idds_vis.staging.locations import (
    Placer,
    Wanted,
    location_kind,
    location_parts,
    location_reference,
    location_scheme,
    wanted,
)
from idds_vis.staging.paths import is_within
from idds_vis.staging.sqlite_guard import MLFLOW_TRIGGERS, GuardedStore, HostileStore, open_store

Tail = Callable[[str, str], tuple[str, ...]]
ARTIFACT_LOCATION_TAG = "mlflow.artifactLocation"  # mlflow.utils.mlflow_tags


@dataclass(frozen=True)
class _Column:
    """A column holding artefact locations, and how to find each row's experiment."""

    table: str
    column: str
    own_id: str | None  # the row's own id column, which MLflow puts in the path
    tail: Tail  # MLflow's layout below the artefact root, for rows nothing matched
    # How the row's experiment id is found: its own column, or (table, our column, its column)
    # of the row it belongs to.
    via: tuple[str, str, str] | None = None
    tag_key: bool = False  # a key/value table: only the artefact-location tag's rows


# mlflow 3.17.2 names (store/tracking/dbmodels/models.py, model_registry/dbmodels/models.py).
PLACED = (
    _Column("runs", "artifact_uri", "run_uuid", lambda e, o: (e, o, "artifacts")),
    _Column(
        "logged_models", "artifact_location", "model_id", lambda e, o: (e, "models", o, "artifacts")
    ),
    _Column("experiments", "artifact_location", None, lambda e, _o: (e,)),
    _Column(
        "model_versions",
        "storage_location",
        None,
        lambda _e, _o: (),
        ("runs", "run_id", "run_uuid"),
    ),
    _Column("model_versions", "source", None, lambda _e, _o: (), ("runs", "run_id", "run_uuid")),
    # A trace's artefacts (its spans) are read from the location in this tag.
    _Column(
        "trace_tags",
        "value",
        "request_id",
        lambda e, o: (e, "traces", o, "artifacts"),
        ("trace_info", "request_id", "request_id"),
        tag_key=True,
    ),
    _Column(
        "trace_request_metadata",
        "value",
        "request_id",
        lambda e, o: (e, "traces", o, "artifacts"),
        ("trace_info", "request_id", "request_id"),
        tag_key=True,
    ),
)
# URLs that are no artefact location but that the server (webhook tests, MCP, the gateway)
# or the page would fetch: their URI values are blanked. JSON documents keep their shape.
BLANKED = (
    ("model_versions", "run_link"),  # shown as a link to follow
    ("webhooks", "url"),
    ("mcp_access_endpoints", "url"),
    ("mcp_server_versions", "source"),
    ("datasets", "dataset_source"),
    ("secrets", "auth_config"),
)
# Locations one store may hold: placing one costs a few stat calls in Python (outside the
# SQLite budget), about 0.2 ms, so this keeps a rewrite within tens of CPU seconds.
MAX_LOCATIONS = 100_000
# 'scheme:' followed by no blank (not 'note: …'), a network path, or a UNC path.
_URI_LIKE = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.-]*:\S|//|\\\\)")


@dataclass(frozen=True)
class _Cell:
    table: str
    column: str
    rowid: int
    original: str
    own_id: str | None
    want: Wanted
    reference: tuple[str, str, list[str]] | None


def _select(col: _Column, columns: dict[str, set[str]]) -> tuple[str, list[str]] | None:
    have = columns.get(col.table, set())
    if col.column not in have or (col.tag_key and "key" not in have):
        return None
    own = f"t.{col.own_id}" if col.own_id in have else "NULL"
    where, params = (" WHERE t.key = ?", [ARTIFACT_LOCATION_TAG]) if col.tag_key else ("", [])
    if "experiment_id" in have:
        exp, join = "t.experiment_id", ""
    elif (
        col.via
        and col.via[1] in have
        and {col.via[2], "experiment_id"} <= columns.get(col.via[0], set())
    ):
        other, ours, theirs = col.via
        exp, join = "o.experiment_id", f" LEFT JOIN {other} o ON o.{theirs} = t.{ours}"
    else:
        exp, join = "NULL", ""
    sql = f"SELECT t.rowid, t.{col.column}, {exp}, {own} FROM {col.table} t{join}{where}"
    return sql, params


def _cells(store: GuardedStore, columns: dict[str, set[str]]) -> list[_Cell]:
    cells: list[_Cell] = []
    for col in PLACED:
        query = _select(col, columns)
        if query is None:
            continue
        for rowid, value, exp, own in store.rows(*query):
            parts = location_parts(value) if isinstance(value, str) else None
            if parts is None:
                continue
            exp_id = None if exp is None else str(exp)
            own_id = None if own is None else str(own)
            tail = col.tail(exp_id or "", own_id or "") if exp_id else ()
            want = wanted(location_kind(value), parts, exp_id, own_id, tuple(c for c in tail if c))
            ref = location_reference(value)
            cells.append(_Cell(col.table, col.column, rowid, value, own_id, want, ref))
            if len(cells) > MAX_LOCATIONS:
                raise HostileStore(
                    f"{store.shown}: more than {MAX_LOCATIONS} artefact locations, not served"
                )
    return cells


def _scrub(value: Any) -> Any:
    """The value with every URI-like string in it blanked (JSON documents keep their shape)."""
    if isinstance(value, str):
        return "" if _URI_LIKE.match(value) else value
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _blanked(text: str) -> str:
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError):
        document = text
    try:
        scrubbed = _scrub(document)
    except RecursionError:
        return ""  # nested deeper than anything a real store writes: all of it goes
    if scrubbed == document:
        return text
    return str(scrubbed) if document is text else json.dumps(scrubbed)


def _blank_updates(
    store: GuardedStore, columns: dict[str, set[str]]
) -> list[tuple[str, str, int, str]]:
    updates = []
    for table, column in BLANKED:
        if column not in columns.get(table, set()):
            continue
        for rowid, value in store.rows(f"SELECT rowid, {column} FROM {table}"):
            if isinstance(value, str) and (new := _blanked(value)) != value:
                updates.append((table, column, rowid, new))
    return updates


def _place_updates(cells: list[_Cell], placer: Placer) -> list[tuple[str, str, int, str]]:
    # Matches first, so the fallbacks can use the artefact roots the matches revealed;
    # references (runs:/, models:/) last, as they go where the row they name went.
    plain = [c for c in cells if c.reference is None]
    found = {id(c): placer.find(c.want) for c in plain}
    places: dict[int, Path] = {id(c): found[id(c)] or placer.fallback(c.want) for c in plain}
    named = {
        ("runs" if c.table == "runs" else "models", c.own_id): places[id(c)]
        for c in plain
        if c.table in ("runs", "logged_models") and c.own_id
    }
    for cell in cells:
        if cell.reference is None:
            continue
        scheme, ident, below = cell.reference
        target = named.get((scheme, ident))
        place = None if target is None else target.joinpath(*below)
        if place is None or not is_within(placer.root, place):
            place = placer.find(cell.want) or placer.fallback(cell.want)
        places[id(cell)] = place
    updates = []
    for cell in cells:
        uri = places[id(cell)].as_uri()
        if uri != cell.original:
            updates.append((cell.table, cell.column, cell.rowid, uri))
    return updates


def _foreign(value: object, root: Path) -> bool:
    """A placed column's value that is not a file: URI under root (blank is fine)."""
    if not isinstance(value, str) or not value.strip():
        return False
    if location_scheme(value) != "file":
        return True
    try:
        path = Path(os.path.realpath(unquote(urlsplit(value.strip()).path)))
    except ValueError:
        return True
    return not is_within(root, path)


def _verify(store: GuardedStore, columns: dict[str, set[str]], root: Path) -> None:
    """After the write: no location is left outside the staged tree (a hostile schema could
    make an UPDATE by rowid miss its row, e.g. with a column named rowid)."""
    for col in PLACED:
        query = _select(col, columns)
        if query is None:
            continue
        for _rowid, value, _exp, _own in store.rows(*query):
            if _foreign(value, root):
                raise HostileStore(
                    f"{store.shown}: a location in {col.table}.{col.column} could not be rewritten"
                )
    if _blank_updates(store, columns):
        raise HostileStore(f"{store.shown}: a URL in it could not be blanked")


def rewrite_artifact_locations(
    db_path: Path, staged_root: Path, cpu_budget: float | None = None
) -> int:
    """Rewrite every artefact location to a file:// URI under staged_root, blank other URLs.

    Each location goes to the longest suffix of its path that exists under staged_root;
    failing that, to where MLflow's layout puts it under the artefact root the other rows
    were found in; a ``runs:/``/``models:/`` reference goes where the row it names went.
    Returns the number of rows changed. HostileStore (a StagingError) when the store is
    refused (views, virtual tables, foreign triggers), unreadable, or over the budget.
    """
    placer = Placer(staged_root, db_path)
    root = placer.root
    db = Path(os.path.realpath(db_path))
    shown = db.relative_to(root).as_posix() if is_within(root, db) else db_path.name
    with open_store(db_path, shown, write=True, cpu_budget=cpu_budget) as store:
        schema = store.check()
        tables = {c.table for c in PLACED} | {t for t, _ in BLANKED} | {"trace_info"}
        columns = {t: store.columns(t) for t in sorted(tables) if schema.has_table(t)}
        updates = _place_updates(_cells(store, columns), placer)
        updates += _blank_updates(store, columns)
        if not updates:
            return 0
        store.execute("BEGIN IMMEDIATE")
        try:
            # MLflow's own trigger (immutable secret ids) is dropped from this private copy
            # too: only its name was checked, so its body must never run.
            for name, table in schema.triggers:
                if (name.lower(), table.lower()) in MLFLOW_TRIGGERS:
                    store.execute(f"DROP TRIGGER IF EXISTS {name.lower()}")
            for table, column, rowid, value in updates:
                store.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (value, rowid))
            store.execute("COMMIT")
        except BaseException:
            if store.conn.in_transaction:
                store.conn.rollback()
            raise
        _verify(store, columns, root)
    return len({(table, rowid) for table, _column, rowid, _value in updates})
