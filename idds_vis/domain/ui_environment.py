"""The environment a UI process gets: an allowlist, never the agent's whole environment.

A UI serves a stranger's MLflow data; whatever credentials sit in its environment or its HOME
(AWS keys, ``~/.aws``, cloud metadata) its artefact repositories would use on a URI the data
names. So the UI process (``idds-vis serve-ui`` spawned by the local deployer, and the MLflow
server that serve-ui becomes) starts from nothing and gets: the few variables a process needs to
run, the marks that let its deployer find it, a private HOME, and switches that stop the cloud
SDKs from discovering credentials on their own. Pure: the callers pass the parent environment.
"""

from __future__ import annotations

from collections.abc import Mapping

# Inherited when the parent has them: what any process needs to run (locale, time zone, where
# programs and, when idds-vis is not installed, its sources are) and the image's Python switches.
INHERITED = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    }
)
INHERITED_PREFIXES = ("LC_",)

# How a local deployer finds its UIs after serve-ui has exec'd into uvicorn
# (idds_vis/deploy/local_processes.py); the mark a test run puts on every process it starts, so
# its leak check never touches another run's (tests/integration/conftest.py); where the
# stand-in UI of tests and benchmarks journals (idds_vis/ui/stub.py). No secrets.
MARKS = frozenset(
    {
        "IDDS_VIS_UI_LABEL",
        "IDDS_VIS_UI_NAME",
        "IDDS_VIS_UI_PORT",
        "IDDS_VIS_TEST_RUN",
        "IDDS_VIS_STUB_JOURNAL",
    }
)

# Credential discovery off, whatever the machine offers: no instance metadata (AWS, GCE), no
# shared AWS config or credentials file (os.devnull: the SDK reads an empty file), no gcloud or
# Azure CLI configuration outside the private HOME.
NO_CLOUD_DISCOVERY = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "NO_GCE_CHECK": "true",
}


# MLflow's own switches for what a read-only UI of one training has no use for (MLflow 3.17):
# the AI Gateway (its pages and the "features" the UI reads from server-info) and telemetry.
MLFLOW_OFF = {
    "MLFLOW_ENABLE_AI_GATEWAY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def ui_environment(
    parent: Mapping[str, str], *, home: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The UI process's environment: allowlisted names of ``parent``, a private HOME, no clouds.

    ``extra`` (the switches the caller sets itself) goes in last, so it wins; it cannot turn
    cloud discovery, the gateway or telemetry back on nor move HOME.
    """
    env = {
        name: value
        for name, value in parent.items()
        if name in INHERITED or name in MARKS or name.startswith(INHERITED_PREFIXES)
    }
    env.update(extra or {})
    env.update(
        {
            "HOME": home,
            # Where gcloud and the Azure CLI would look: inside the (empty) private HOME.
            "CLOUDSDK_CONFIG": f"{home}/.config/gcloud",
            "AZURE_CONFIG_DIR": f"{home}/.azure",
            **NO_CLOUD_DISCOVERY,
            **MLFLOW_OFF,
        }
    )
    return env
