"""What uvicorn serves in a UI process: MLflow's ASGI app behind the read-only gate, and in
front of both, when the local deployer set a secret, the proxy guard (``ui/proxy_guard.py``).

``ui/uvicorn_server.py`` imports it, once it has set the switches MLflow reads, and serves it
with uvicorn in the same process; the instance's prefix is MLflow's own static-prefix
variable, so the gate and MLflow always agree on it.
"""

from __future__ import annotations

import os

from mlflow.server.fastapi_app import app as mlflow_app
from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

from idds_vis.ui.proxy_guard import SECRET_ENV, ProxyGuard
from idds_vis.ui.readonly_gate import ReadOnlyGate

app = ProxyGuard(
    ReadOnlyGate(mlflow_app, os.environ[STATIC_PREFIX_ENV_VAR]), os.environ.get(SECRET_ENV)
)
