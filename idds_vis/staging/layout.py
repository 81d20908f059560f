"""Where in a staged tree the MLflow tracking data is, and which experiments it holds."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import yaml

from idds_vis.domain.errors import NoMlflowData
from idds_vis.staging.paths import RESERVED

MAX_DEPTH = 4
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SKIP = {RESERVED, ".trash", ".git", "__pycache__"}


@dataclass(frozen=True)
class Layout:
    layout: str  # "sqlite" or "file-store"
    store_path: Path
    experiments: tuple[str, ...]


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def sqlite_experiments(db: Path) -> tuple[str, ...] | None:
    """Active experiment names, or None when the file has no experiments table."""
    try:
        with closing(_connect_ro(db)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "experiments" not in tables:
                return None
            rows = conn.execute(
                "SELECT name FROM experiments WHERE lifecycle_stage = 'active'"
            ).fetchall()
    except sqlite3.Error:
        return None
    return tuple(sorted(str(r[0]) for r in rows))


def _experiment_meta(exp_dir: Path) -> dict[str, object] | None:
    """The experiment's meta.yaml, if exp_dir is an experiment (not a run or model) dir."""
    try:
        meta = yaml.safe_load((exp_dir / "meta.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or "name" not in meta or "experiment_id" not in meta:
        return None
    # Run dirs also carry experiment_id and a legacy 'name'; only an experiment dir
    # is named after its own experiment id.
    if str(meta["experiment_id"]) != exp_dir.name:
        return None
    return meta


def file_store_experiments(store: Path) -> tuple[str, ...] | None:
    """Active experiment names, or None when store holds no experiment dirs at all."""
    names: list[str] = []
    found = False
    for child in sorted(store.iterdir()):
        if child.name in _SKIP or child.is_symlink() or not child.is_dir():
            continue
        meta = _experiment_meta(child)
        if meta is None:
            continue
        found = True
        if meta.get("lifecycle_stage", "active") == "active":
            names.append(str(meta["name"]))
    return tuple(sorted(names)) if found else None


def _walk(root: Path) -> list[tuple[int, Path, list[str], list[str]]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP)
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        out.append((depth, here, dirnames, sorted(filenames)))
    return out


def detect_layout(root: Path, source: str | None = None) -> Layout:
    """Prefer an SQLite store (an mlflow.db first), then an mlruns-named file store;
    among equals the shallowest, then the first by name."""
    dbs: list[tuple[int, int, str, Path, tuple[str, ...]]] = []
    stores: list[tuple[int, int, str, Path, tuple[str, ...]]] = []
    for depth, here, _dirs, files in _walk(root):
        for name in files:
            path = here / name
            if not name.endswith(".db") or not _is_sqlite(path):
                continue
            experiments = sqlite_experiments(path)
            if experiments is None and name != "mlflow.db":
                continue
            rank = 0 if name == "mlflow.db" else 1
            dbs.append((rank, depth, str(path), path, experiments or ()))
        if not here.is_symlink():
            experiments = file_store_experiments(here)
            if experiments is not None:
                rank = 0 if here.name == "mlruns" else 1
                stores.append((rank, depth, str(here), here, experiments))
    if dbs:
        best = min(dbs)
        return Layout("sqlite", best[3], best[4])
    if stores:
        best = min(stores)
        return Layout("file-store", best[3], best[4])
    raise NoMlflowData(
        f"no MLflow data in {source or root}: expected an mlruns directory or an mlflow.db"
    )
