"""The UI process's spelled-out MLflow switch names agree with the installed MLflow, and MLflow's
server app imports with the unused heavy modules left out, and the store's preparation without
the stagers (issue 18)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from idds_vis.ui import uvicorn_server

pytestmark = pytest.mark.mlflow

_CHECK = """
import json, os, sys
from idds_vis.ui import uvicorn_server as u
u.leave_out_unused_modules()
os.environ[u.STATIC_PREFIX_ENV_VAR] = "/vis/unit"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow.server.constants import (
    ARTIFACT_ROOT_ENV_VAR, BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR)
from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR
import mlflow.server.fastapi_app, mlflow.store.fs2db, mlflow.store.tracking.sqlalchemy_store
from mlflow.store.db.utils import _get_latest_schema_revision
alembic_head = _get_latest_schema_revision()
import idds_vis.staging.info, idds_vis.ui.store  # what a pool member preloads
print(json.dumps({
    "stagers": [m for m in ("idds_vis.staging.archive_stager", "idds_vis.staging.download",
                            "idds_vis.staging.s3", "idds_vis.staging.rucio") if m in sys.modules],
    "heads": [u.schema_head(), alembic_head],
    "names": [BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR, ARTIFACT_ROOT_ENV_VAR,
              STATIC_PREFIX_ENV_VAR],
    "loaded": [m for m in u.UNUSED_MODULES if sys.modules.get(m) is not None],
}))
"""


def test_switch_names_match_mlflow_and_the_app_imports_without_unused_modules() -> None:
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["names"] == [
        uvicorn_server.BACKEND_STORE_URI_ENV_VAR,
        uvicorn_server.REGISTRY_STORE_URI_ENV_VAR,
        uvicorn_server.ARTIFACT_ROOT_ENV_VAR,
        uvicorn_server.STATIC_PREFIX_ENV_VAR,
    ]
    assert found["loaded"] == []
    # Preparing a store loads none of the stagers (idds_vis/staging/__init__.py is lazy).
    assert found["stagers"] == []
    ours, alembics = found["heads"]
    assert ours == alembics  # the scripts' text says what Alembic says


def test_allowed_hosts_are_listed_bare_and_with_any_port() -> None:
    listed = uvicorn_server.allowed_host_list(["vis.example.org", "127.0.0.1", "vis.example.org"])
    assert listed == "vis.example.org,vis.example.org:*,127.0.0.1,127.0.0.1:*"
