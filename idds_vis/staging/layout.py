"""Where in a staged tree the MLflow tracking data is, and which experiments it holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from idds_vis.domain.errors import NoMlflowData
from idds_vis.staging.paths import RESERVED
from idds_vis.staging.sqlite_guard import HostileStore, is_sqlite_file, open_store

MAX_DEPTH = 4
_SKIP = {RESERVED, ".trash", ".git", "__pycache__"}


@dataclass(frozen=True)
class Layout:
    layout: str  # "sqlite" or "file-store"
    store_path: Path
    experiments: tuple[str, ...]


def sqlite_experiments(db: Path, shown: str | None = None) -> tuple[str, ...] | None:
    """Active experiment names, or None when the file has no experiments table.

    Guarded (sqlite_guard): HostileStore when the store has a view, a virtual table or a
    foreign trigger, is unreadable, or costs more than the CPU budget to read.
    """
    with open_store(db, shown or db.name) as store:
        schema = store.check()
        if not schema.has_table("experiments"):
            return None
        rows = store.rows("SELECT name FROM experiments WHERE lifecycle_stage = 'active'")
    return tuple(sorted(str(r[0]) for r in rows))


# An experiment's meta.yaml is a few hundred bytes; a bigger one is not read.
MAX_META_BYTES = 64 * 1024


def _scalar(value: object) -> bool:
    # YAML aliases make a 1 KiB file a list of 10^9 strings that costs nothing until str()
    # expands it (hours of CPU, GBs): only plain scalars are ever turned into text.
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _read_meta(path: Path) -> str | None:
    with open(path, "rb") as meta:
        data = meta.read(MAX_META_BYTES + 1)
    return None if len(data) > MAX_META_BYTES else data.decode()


def _experiment_meta(exp_dir: Path) -> dict[str, object] | None:
    """The experiment's meta.yaml, if exp_dir is an experiment (not a run or model) dir."""
    try:
        text = _read_meta(exp_dir / "meta.yaml")
        meta = yaml.safe_load(text) if text is not None else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or "name" not in meta or "experiment_id" not in meta:
        return None
    if not _scalar(meta["name"]) or not _scalar(meta["experiment_id"]):
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
    not_sqlite: list[str] = []
    for depth, here, _dirs, files in _walk(root):
        for name in files:
            path = here / name
            if not name.endswith(".db"):
                continue
            shown = path.relative_to(root).as_posix()
            if not is_sqlite_file(path):
                if name == "mlflow.db":
                    not_sqlite.append(shown)
                continue
            try:
                experiments = sqlite_experiments(path, shown)
            except HostileStore:
                # Another tool's database (optuna.db...) may be anything; an mlflow.db that
                # is no plain MLflow store must not be served, nor silently skipped.
                if name == "mlflow.db":
                    raise
                continue
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
    if not_sqlite:
        raise NoMlflowData(
            f"no MLflow data in {source or root}: {not_sqlite[0]} is not an SQLite database"
        )
    raise NoMlflowData(
        f"no MLflow data in {source or root}: expected an mlruns directory or an mlflow.db"
    )
