# The idds-vis agent: intake, pipeline, reaper, reconciler. It never imports mlflow.
# Build from the repository root:  docker build -f images/agent.Dockerfile -t idds-vis-agent:0.1.0 .
# BASE: any Debian-like image with python3 (3.11) and its venv module (see ui.Dockerfile).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/idds-vis/bin:$PATH

# Dependencies first, then the code; pip from a throwaway venv, with the builder's configuration
# from the optional build secrets (all as in ui.Dockerfile).
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
    && /var/tmp/pip/bin/pip --python /opt/idds-vis/bin/python install /src \
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

USER 10001:10001
WORKDIR /tmp
# The web app, /healthz, /readyz and /metrics when web_port is 8080 (conf/agent.yaml).
EXPOSE 8080
ENTRYPOINT ["idds-vis", "agent"]
