# The per-task MLflow UI: `idds-vis serve-ui` stages the artefacts, then execs the MLflow app.
# Build from the repository root:  docker build -f images/ui.Dockerfile -t idds-vis-ui:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    HOME=/tmp \
    TMPDIR=/tmp

# mlflow is pinned by the [ui] extra of setup.py; the source tree is removed after installing.
COPY setup.py README.md /src/
COPY idds_vis /src/idds_vis
RUN pip install --no-cache-dir "/src[ui,rucio]" \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin idds

# Runs with a read-only root filesystem: /tmp and /data are emptyDir volumes in the pod.
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["idds-vis", "serve-ui"]
