"""rewrite_artifact_locations: a copied MLflow store must find its artefacts in the staged tree."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from idds_vis.domain.errors import StagingError
from idds_vis.staging import rewrite_artifact_locations
from tests.mlflow_data import ARTIFACT_NAME, ARTIFACT_TEXT, sqlite_template

RUN = "a1" * 16
RUN2 = "b2" * 16


def uri_path(uri: str) -> Path:
    assert uri.startswith("file:///"), uri
    return Path(unquote(urlsplit(uri).path))


def under(root: Path, uri: str) -> Path:
    path = uri_path(uri)
    assert path.resolve().is_relative_to(root.resolve()), f"{uri} is outside {root}"
    return path


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def staged_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The real store as it lands after unpacking: nested, away from its original paths."""
    root = tmp_path / "staged"
    shutil.copytree(sqlite_template(), root / "output" / "job")
    return root, root / "output" / "job" / "mlflow.db"


def test_every_run_finds_its_artifact_file(staged_copy: tuple[Path, Path]) -> None:
    root, db = staged_copy
    before = query(db, "SELECT artifact_uri FROM runs")
    assert all(not uri_path(str(u)).is_relative_to(root) for (u,) in before)

    changed = rewrite_artifact_locations(db, root)

    runs = query(db, "SELECT artifact_uri FROM runs")
    assert runs
    for (uri,) in runs:
        assert (under(root, str(uri)) / ARTIFACT_NAME).read_text() == ARTIFACT_TEXT
    models = query(db, "SELECT artifact_location FROM logged_models")
    assert models
    for (uri,) in models:
        assert (under(root, str(uri)) / "MLmodel").is_file()
    [(model_place,)] = models
    for storage, source in query(db, "SELECT storage_location, source FROM model_versions"):
        assert (under(root, str(storage)) / "MLmodel").is_file()
        # models:/<id> names the logged model: it goes where that model's row went.
        assert source == model_place
    experiments = dict(query(db, "SELECT name, artifact_location FROM experiments"))
    assert under(root, str(experiments["idds-staging-test"])) == root / "output/job/mlartifacts"
    under(root, str(experiments["Default"]))
    # experiments (2) + runs + logged models + model versions, each counted once per row
    assert changed == len(experiments) + len(runs) + len(models) + 1


def test_second_rewrite_changes_nothing(staged_copy: tuple[Path, Path]) -> None:
    root, db = staged_copy
    assert rewrite_artifact_locations(db, root) > 0
    snapshot = query(db, "SELECT artifact_uri FROM runs")
    assert rewrite_artifact_locations(db, root) == 0
    assert query(db, "SELECT artifact_uri FROM runs") == snapshot


def test_working_copy_in_reserved_dir_still_finds_artifacts(
    staged_copy: tuple[Path, Path],
) -> None:
    # The UI prepares its own copy under .idds-vis/ and rewrites that one.
    root, db = staged_copy
    copy = root / ".idds-vis" / "store.db"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)
    assert rewrite_artifact_locations(copy, root) > 0
    for (uri,) in query(copy, "SELECT artifact_uri FROM runs"):
        assert (under(root, str(uri)) / ARTIFACT_NAME).is_file()


def tiny_store(
    db: Path, experiments: list[tuple[int, str]], runs: list[tuple[str, int, str]]
) -> None:
    """Only the tables and columns an old or minimal schema has (no logged_models)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE experiments (experiment_id INTEGER, name TEXT,"
            " artifact_location TEXT, lifecycle_stage TEXT)"
        )
        conn.execute(
            "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, artifact_uri TEXT,"
            " lifecycle_stage TEXT)"
        )
        conn.executemany(
            "INSERT INTO experiments VALUES (?, ?, ?, 'active')",
            [(i, f"exp{i}", loc) for i, loc in experiments],
        )
        conn.executemany("INSERT INTO runs VALUES (?, ?, ?, 'active')", runs)


def artefact_tree(root: Path) -> Path:
    artifacts = root / "job" / "mlartifacts" / "1" / RUN / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / ARTIFACT_NAME).write_text(ARTIFACT_TEXT)
    return artifacts


@pytest.mark.parametrize(
    "original",
    [
        f"file:///home/u/job/mlartifacts/1/{RUN}/artifacts",
        f"/abs/elsewhere/mlartifacts/1/{RUN}/artifacts",
        f"mlflow-artifacts:/1/{RUN}/artifacts",
        f"mlflow-artifacts://tracking.example.org:5000/1/{RUN}/artifacts",
        f"./mlartifacts/1/{RUN}/artifacts",
        f"file:///C:/Users/u/job/mlartifacts/1/{RUN}/artifacts",
        f"file:///home/u/job/../job/mlartifacts/1/{RUN}/artifacts/",
    ],
)
def test_each_location_form_finds_the_staged_directory(tmp_path: Path, original: str) -> None:
    root = tmp_path / "staged"
    artifacts = artefact_tree(root)
    db = root / "job" / "mlflow.db"
    tiny_store(db, [], [(RUN, 1, original)])
    assert rewrite_artifact_locations(db, root) == 1
    [(uri,)] = query(db, "SELECT artifact_uri FROM runs")
    assert uri_path(str(uri)) == artifacts.resolve()


def test_unmatched_rows_follow_their_matched_siblings(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    artefact_tree(root)
    db = root / "job" / "mlflow.db"
    base = "file:///home/u/job/mlartifacts"
    # RUN2 logged no artefacts, so its directory was never created on the training machine.
    tiny_store(
        db,
        [(1, f"{base}/1")],
        [(RUN, 1, f"{base}/1/{RUN}/artifacts"), (RUN2, 1, f"{base}/1/{RUN2}/artifacts")],
    )
    assert rewrite_artifact_locations(db, root) == 3
    uris = dict(query(db, "SELECT run_uuid, artifact_uri FROM runs"))
    assert (
        under(root, str(uris[RUN2])) == (root / "job/mlartifacts/1" / RUN2 / "artifacts").resolve()
    )
    [(exp,)] = query(db, "SELECT artifact_location FROM experiments")
    assert under(root, str(exp)) == (root / "job/mlartifacts/1").resolve()


def test_with_nothing_found_the_experiment_suffix_goes_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    db = root / "job" / "mlflow.db"
    tiny_store(
        db,
        [(7, "/home/u/elsewhere/mlruns/7")],
        [
            (RUN, 7, f"mlflow-artifacts:/7/{RUN}/artifacts"),
            (RUN2, 7, f"/home/u/elsewhere/mlruns/7/{RUN2}/artifacts"),
        ],
    )
    assert rewrite_artifact_locations(db, root) == 3
    uris = dict(query(db, "SELECT run_uuid, artifact_uri FROM runs"))
    assert under(root, str(uris[RUN])) == (root / "job/mlartifacts/7" / RUN / "artifacts").resolve()
    assert under(root, str(uris[RUN2])).as_posix().endswith(f"/mlruns/7/{RUN2}/artifacts")


def test_hostile_rows_never_point_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    artefact_tree(root)
    db = root / "job" / "mlflow.db"
    tiny_store(
        db,
        [(1, "file:///../../../etc")],
        [
            ("../../../../etc", 1, "/etc/passwd"),
            (RUN, 1, "file:///../../../../tmp/x/../../etc/shadow"),
            ("..", 1, ".."),
        ],
    )
    rewrite_artifact_locations(db, root)
    for (uri,) in query(
        db, "SELECT artifact_uri FROM runs UNION ALL SELECT artifact_location FROM experiments"
    ):
        under(root, str(uri))


def test_other_schemes_and_references_land_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    artifacts = artefact_tree(root)
    db = root / "job" / "mlflow.db"
    foreign = [
        f"s3://someone-elses-bucket/1/{RUN}/artifacts",
        "runs:/r/model",
        "models:/m-1",
        "dbfs:/x/y",
        "http://127.0.0.1:9/x",
        "ftp://host/a",
        "wasbs://c@acct.blob.core.windows.net/p",
    ]
    tiny_store(
        db,
        [(1, "gs://bucket/1")],
        [(RUN if i == 0 else f"r{i}", 1, loc) for i, loc in enumerate(foreign)],
    )
    assert rewrite_artifact_locations(db, root) == len(foreign) + 1
    uris = dict(query(db, "SELECT run_uuid, artifact_uri FROM runs"))
    # The bucket's layout below its root is MLflow's: the staged copy of the run is found.
    assert uri_path(str(uris[RUN])) == artifacts.resolve()
    for uri in uris.values():
        under(root, str(uri))
    [(exp,)] = query(db, "SELECT artifact_location FROM experiments")
    under(root, str(exp))


def test_a_run_reference_goes_where_the_run_went(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    artifacts = artefact_tree(root)
    db = root / "job" / "mlflow.db"
    tiny_store(db, [], [(RUN, 1, f"/home/u/job/mlartifacts/1/{RUN}/artifacts")])
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE model_versions (run_id TEXT, source TEXT, storage_location TEXT)"
        )
        conn.execute(
            "INSERT INTO model_versions VALUES (?, ?, ?)", (RUN, f"runs:/{RUN}/model", None)
        )
    rewrite_artifact_locations(db, root)
    [(source, storage)] = query(db, "SELECT source, storage_location FROM model_versions")
    assert uri_path(str(source)) == artifacts.resolve() / "model"
    assert storage is None


@pytest.mark.parametrize(
    ("table", "ddl", "original", "expected"),
    [
        ("webhooks", "url TEXT", "http://127.0.0.1:9/hook", ""),
        ("model_versions", "run_link TEXT", "https://elsewhere.example/run", ""),
        (
            "datasets",
            "dataset_source TEXT",
            '{"uri": "s3://b/train.csv", "name": "train"}',
            '{"uri": "", "name": "train"}',
        ),
        ("datasets", "dataset_source", '{"name": "note: not a URI"}', None),
        ("secrets", "auth_config TEXT", '{"api_base": "https://x.example/v1"}', '{"api_base": ""}'),
    ],
)
def test_other_urls_are_blanked(
    tmp_path: Path, table: str, ddl: str, original: str, expected: str | None
) -> None:
    db = tmp_path / "mlflow.db"
    tiny_store(db, [], [])
    column = ddl.split()[0]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"CREATE TABLE {table} ({ddl})")
        conn.execute(f"INSERT INTO {table} VALUES (?)", (original,))
    rewrite_artifact_locations(db, tmp_path)
    [(value,)] = query(db, f"SELECT {column} FROM {table}")
    assert value == (original if expected is None else expected)


def test_mlflow_trigger_is_dropped_before_the_write(tmp_path: Path) -> None:
    # Only its name is checked, so its body (here one that would abort) must never run.
    root = tmp_path / "staged"
    artefact_tree(root)
    db = root / "job" / "mlflow.db"
    tiny_store(db, [], [(RUN, 1, "s3://b/x")])
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE secrets (secret_id TEXT, auth_config TEXT)")
        conn.execute(
            "CREATE TRIGGER prevent_secrets_aad_mutation BEFORE UPDATE ON runs"
            " BEGIN SELECT RAISE(ABORT, 'fired'); END"
        )
    # On 'runs', not 'secrets': not MLflow's trigger, so the store is refused.
    with pytest.raises(StagingError, match="trigger 'prevent_secrets_aad_mutation'"):
        rewrite_artifact_locations(db, root)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TRIGGER prevent_secrets_aad_mutation")
        conn.execute(
            "CREATE TRIGGER prevent_secrets_aad_mutation BEFORE UPDATE ON secrets"
            " BEGIN SELECT RAISE(ABORT, 'fired'); END"
        )
        conn.execute("INSERT INTO secrets VALUES ('s', '{\"u\": \"http://x/\"}')")
    assert rewrite_artifact_locations(db, root) == 2
    assert query(db, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
