# The idds-vis agent: intake, pipeline, reaper, reconciler. It never imports mlflow.
# Build from the repository root:  docker build -f images/agent.Dockerfile -t idds-vis-agent:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

COPY setup.py README.md /src/
COPY idds_vis /src/idds_vis
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin idds

USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["idds-vis", "agent"]
