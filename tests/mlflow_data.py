"""Small MLflow tracking stores for staging tests: a real SQLite one and a hand-written mlruns.

``make_sqlite_store`` uses the real mlflow API (slow: seconds), so tests that only need *a*
store copy ``sqlite_template()``, built once per test process.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

EXPERIMENT = "idds-staging-test"
ARTIFACT_NAME = "notes.txt"
ARTIFACT_TEXT = "loss went down\n"
FILE_STORE_EXPERIMENTS = ("Default", "hpo-scan")  # the active ones make_file_store writes
FILE_STORE_RUN = "0123456789abcdef0123456789abcdef"

ARCHIVE_FORMATS = ("tar", "tar.gz", "tgz", "tar.bz2", "tar.xz", "zip")


def make_sqlite_store(directory: Path, *, with_model: bool = True) -> Path:
    """Log one run (params, metrics, an artifact, optionally a registered model) into
    ``directory/mlflow.db`` with artefacts under ``directory/mlartifacts``; return the db."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "mlflow.db"
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    cwd = Path.cwd()
    # The Default experiment's location is resolved against the cwd: keep it in directory.
    os.chdir(directory)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        experiment_id = mlflow.create_experiment(
            EXPERIMENT, artifact_location=(directory / "mlartifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name="staging-test"):
            mlflow.log_params({"learning_rate": 0.1, "epochs": 3})
            for step, loss in enumerate((0.9, 0.5, 0.3)):
                mlflow.log_metric("loss", loss, step=step)
            note = directory / ARTIFACT_NAME
            note.write_text(ARTIFACT_TEXT)
            mlflow.log_artifact(str(note))
            note.unlink()
            if with_model:
                _log_model(mlflow)
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(previous or "")
    return db


def _log_model(mlflow: Any) -> None:
    from mlflow.pyfunc import PythonModel

    class Echo(PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: list[str], params: Any = None) -> list[str]:
            return model_input

    # Fixed requirements skip pip inference, which is slow and wants the network.
    mlflow.pyfunc.log_model(
        name="model",
        python_model=Echo(),
        registered_model_name="staging-test-model",
        pip_requirements=["mlflow"],
    )


@functools.cache
def sqlite_template() -> Path:
    """A directory holding one make_sqlite_store() result; copy it, never change it."""
    where = Path(tempfile.mkdtemp(prefix="idds-vis-mlflow-template-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    make_sqlite_store(where / "job")
    return where / "job"


def _meta(path: Path, lines: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.yaml").write_text("\n".join(lines) + "\n")


def make_file_store(directory: Path, *, origin: str = "/home/user/job") -> Path:
    """Hand-written ``directory/mlruns``: active Default and hpo-scan (one run with a param,
    a metric and an artifact), a deleted experiment and one in .trash; return mlruns."""
    mlruns = directory / "mlruns"
    for exp_id, name, stage in (
        ("0", "Default", "active"),
        ("1", "hpo-scan", "active"),
        ("2", "abandoned", "deleted"),
    ):
        _meta(
            mlruns / exp_id,
            [
                f"artifact_location: file://{origin}/mlruns/{exp_id}",
                "creation_time: 1700000000000",
                f"experiment_id: '{exp_id}'",
                "last_update_time: 1700000000000",
                f"lifecycle_stage: {stage}",
                f"name: {name}",
            ],
        )
    _meta(
        mlruns / ".trash" / "3", ["experiment_id: '3'", "name: trashed", "lifecycle_stage: deleted"]
    )
    run = mlruns / "1" / FILE_STORE_RUN
    _meta(
        run,
        [
            f"artifact_uri: file://{origin}/mlruns/1/{FILE_STORE_RUN}/artifacts",
            "end_time: 1700000001000",
            "entry_point_name: ''",
            "experiment_id: '1'",
            "lifecycle_stage: active",
            "name: ''",  # legacy field: run dirs carry a 'name' too, which must not fool detection
            f"run_id: {FILE_STORE_RUN}",
            f"run_uuid: {FILE_STORE_RUN}",
            "run_name: trial-0",
            "source_name: ''",
            "source_type: 4",
            "source_version: ''",
            "start_time: 1700000000000",
            "status: 3",
            "tags: []",
            "user_id: physicist",
        ],
    )
    (run / "params").mkdir()
    (run / "params" / "learning_rate").write_text("0.1")
    (run / "metrics").mkdir()
    (run / "metrics" / "loss").write_text("1700000000500 0.42 0\n")
    (run / "artifacts").mkdir()
    (run / "artifacts" / ARTIFACT_NAME).write_text(ARTIFACT_TEXT)
    return mlruns


def pack(directory: Path, archive: Path, fmt: str, *, prefix: str = "") -> Path:
    """Archive directory's contents (under ``prefix/`` if given) as fmt, one of
    ARCHIVE_FORMATS. The format comes from fmt, never from archive's name."""
    children = sorted(directory.iterdir())
    arcname = (lambda p: f"{prefix}/{p.name}") if prefix else (lambda p: p.name)
    if fmt == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for child in children:
                for path in [child, *sorted(child.rglob("*"))] if child.is_dir() else [child]:
                    name = arcname(child) + path.as_posix()[len(child.as_posix()) :]
                    zf.write(path, name)
        return archive
    modes = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
    with tarfile.open(archive, modes[fmt]) as tar:
        for child in children:
            tar.add(child, arcname=arcname(child))
    return archive
