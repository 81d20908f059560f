# The per-task MLflow UI: `idds-vis serve-ui` stages the artefacts, then execs the MLflow app.
# Build from the repository root:  docker build -f images/ui.Dockerfile -t idds-vis-ui:0.1.0 .
# BASE: any Debian-like image with python3 (3.11) and its venv module; where no registry is
# reachable, one made with debootstrap (tests/images/podman.py shows how).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    HOME=/tmp \
    TMPDIR=/tmp \
    PATH=/opt/idds-vis/bin:$PATH

# What `idds-vis serve-ui` and the MLflow server it execs never import (measured; tests/images
# runs the UI without them): what `mlflow` pulls in for models, plots, datasets and its own
# server processes (scipy 143 MB, pyarrow 162, scikit-learn 49, matplotlib with fonttools and
# pillow 95, skops, docker, gunicorn), the agent's PostgreSQL driver (asyncpg 12) and the graph
# library of idds-workflow (networkx 19), neither used in a UI pod, and pip itself. numpy and
# pandas stay: the server's gateway routes import them. About 1.1 GB unpruned, 593 MB pruned.
ARG NOT_SERVED="scikit-learn scipy pyarrow matplotlib contourpy fonttools pillow kiwisolver cycler skops prettytable wcwidth joblib threadpoolctl narwhals docker gunicorn asyncpg networkx"

# mlflow is pinned by the [ui] extra of setup.py. Two steps, so a change of the code alone
# reuses the dependencies' layer: first what setup.py asks for (an empty package and README in
# place of the code), then the code itself. pip runs from a throwaway venv of its own (`pip --python`
# installs into the image's), so neither pip nor setuptools stays in the image. It reads the
# builder's configuration (index, CA bundle) from the optional build secrets pip.conf and ca.crt,
# so it reaches the index the way the build host does, and none of it stays here either.
COPY setup.py /src/
# The pip cache is a build cache mount, never in the image (hadolint cannot tell).
# hadolint ignore=DL3042
RUN --mount=type=secret,id=pip.conf,required=false \
    --mount=type=secret,id=ca.crt,required=false \
    --mount=type=cache,id=idds-vis-pip,target=/var/cache/idds-vis-pip \
    mkdir /src/idds_vis && touch /src/idds_vis/__init__.py /src/README.md \
    && python3 -m venv --without-pip /opt/idds-vis \
    && python3 -m venv /var/tmp/pip \
    && export PIP_CONFIG_FILE=/run/secrets/pip.conf PIP_CACHE_DIR=/var/cache/idds-vis-pip \
    && /var/tmp/pip/bin/pip --python /opt/idds-vis/bin/python install "/src[ui,rucio]" \
    && /var/tmp/pip/bin/pip --python /opt/idds-vis/bin/python uninstall --yes $NOT_SERVED \
    && rm -rf /src /var/tmp/pip \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin idds

COPY idds_vis /src/idds_vis
COPY setup.py README.md /src/
# hadolint ignore=DL3042
RUN --mount=type=secret,id=pip.conf,required=false \
    --mount=type=secret,id=ca.crt,required=false \
    --mount=type=cache,id=idds-vis-pip,target=/var/cache/idds-vis-pip \
    python3 -m venv /var/tmp/pip \
    && export PIP_CONFIG_FILE=/run/secrets/pip.conf PIP_CACHE_DIR=/var/cache/idds-vis-pip \
    && /var/tmp/pip/bin/pip --python /opt/idds-vis/bin/python install --no-deps --force-reinstall /src \
    && rm -rf /src /var/tmp/pip

# Runs with a read-only root filesystem: /tmp and /data are emptyDir volumes in the pod.
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["idds-vis", "serve-ui"]
