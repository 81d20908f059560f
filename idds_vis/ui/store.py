"""Turn staged MLflow data into one read-only SQLite store the server can open anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

from idds_vis.domain.errors import StagingError
from idds_vis.domain.models import StagedArtefacts
from idds_vis.staging.paths import shown
from idds_vis.staging.permissions import make_read_only
from idds_vis.staging.rewrite import rewrite_artifact_locations
from idds_vis.staging.sqlite_guard import open_store

PREPARED_DB = ".idds-vis/store.db"
_MARKER = ".idds-vis/prepared.json"


def prepare_store(staged: StagedArtefacts) -> Path:
    """Return the SQLite file to serve; idempotent so a restarted UI reuses the prepared store.

    A file store is migrated into SQLite so that one read-only mechanism (``mode=ro``) covers
    both layouts; an older schema is upgraded on the staged copy, never on the source; artefact
    locations from the training machine are pointed at the staged tree, and those of any
    other scheme (s3://, http://, runs:/ …) too, so the UI never fetches from elsewhere.
    The copy is checked (sqlite_guard) before MLflow's upgrade touches it: a store with a
    view, a virtual table or a foreign trigger fails here with the reason.
    """
    root = Path(staged.root)
    marker = root / _MARKER
    db = root / PREPARED_DB
    if marker.exists() and db.exists():
        return db
    db.parent.mkdir(parents=True, exist_ok=True)
    if staged.layout == "file-store":
        _migrate_file_store(Path(staged.store_path), db)
    elif staged.layout == "sqlite":
        if Path(staged.store_path) != db:
            db.write_bytes(Path(staged.store_path).read_bytes())
        with open_store(db, Path(staged.store_path).name) as store:
            store.check()
        _upgrade_if_needed(db)
    else:
        raise StagingError(f"unknown MLflow layout {staged.layout!r}")
    rewrite_artifact_locations(db, root)
    marker.write_text(json.dumps({"layout": staged.layout, "db": PREPARED_DB}))
    make_read_only(root)
    return db


# MLflow's meta.yaml files are a few hundred bytes (a run's with its tags a few KiB).
MAX_YAML_BYTES = 1024 * 1024


def _check_yaml(mlruns: Path) -> None:
    """Refuse YAML the migration must not read: MLflow writes plain mappings, never an alias,
    and a 1 KiB file of nested aliases is 10^9 strings once MLflow's migration copies it
    (hours of CPU and GBs of memory); nor a file bigger than any MLflow writes."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for dirpath, _dirs, files in os.walk(mlruns):
        for name in files:
            if not name.endswith((".yaml", ".yml")):
                continue
            path = Path(dirpath, name)
            where = shown(path.relative_to(mlruns).as_posix())
            try:
                if path.stat().st_size > MAX_YAML_BYTES:
                    raise StagingError(
                        f"the mlruns file store's {where} is over {MAX_YAML_BYTES} bytes"
                    )
                with open(path, "rb") as text:
                    for event in yaml.parse(text, Loader=loader):
                        if isinstance(event, yaml.AliasEvent):
                            raise StagingError(
                                f"the mlruns file store's {where} uses YAML aliases"
                                " (MLflow writes none)"
                            )
            except (OSError, yaml.YAMLError):
                continue  # unreadable or not YAML: the migration reports what it needs


def _migrate_file_store(mlruns: Path, db: Path) -> None:
    from mlflow.store.fs2db import migrate

    _check_yaml(mlruns)

    # migrate() wants the directory that holds mlruns/, so give it a view named that way.
    parent = mlruns.parent
    if mlruns.name != "mlruns":
        view = db.parent / "fs-view"
        view.mkdir(exist_ok=True)
        link = view / "mlruns"
        if not link.exists():
            link.symlink_to(mlruns.resolve(), target_is_directory=True)
        parent = view
    try:
        migrate(parent, f"sqlite:///{db}", progress=False)
    except Exception as exc:  # the migrator raises bare exceptions on damaged trees
        raise StagingError(f"the mlruns file store could not be read: {exc}") from exc


def _upgrade_if_needed(db: Path) -> None:
    from mlflow.store.db.utils import (
        _get_latest_schema_revision,
        _get_schema_version,
        _upgrade_db,
        create_sqlalchemy_engine,
    )

    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    try:
        if _get_schema_version(engine) != _get_latest_schema_revision():
            _upgrade_db(engine)
    except Exception as exc:
        raise StagingError(f"the mlflow.db schema could not be upgraded: {exc}") from exc
    finally:
        engine.dispose()
