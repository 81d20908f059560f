"""The UI process's environment is an allowlist (domain/ui_environment.py), pure and fast."""

from __future__ import annotations

from idds_vis.domain.ui_environment import ui_environment

AGENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "HOME": "/home/agent",
    "AWS_ACCESS_KEY_ID": "AKIAAGENT",
    "AWS_SECRET_ACCESS_KEY": "agent-secret",
    "AWS_PROFILE": "prod",
    "AWS_CONFIG_FILE": "/home/agent/.aws/config",
    "GOOGLE_APPLICATION_CREDENTIALS": "/home/agent/gcp.json",
    "AZURE_CLIENT_SECRET": "azure-secret",
    "IDDS_VIS_S3_SECRET_ACCESS_KEY": "staging-secret",
    "IDDS_VIS_HTTP_TOKEN": "token",
    "IDDS_VIS_CONFIG": "/etc/idds-vis.yaml",
    "IDDS_VIS_UI_LABEL": "agent-label",
    "MLFLOW_TRACKING_URI": "http://elsewhere",
    "LD_PRELOAD": "/tmp/evil.so",
    "RANDOM_OTHER": "x",
}


def test_only_allowlisted_names_are_inherited_and_clouds_are_off() -> None:
    env = ui_environment(AGENT, home="/state/instances/x/run/home", extra={"TMPDIR": "/t"})
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "IDDS_VIS_UI_LABEL": "agent-label",
        "TMPDIR": "/t",
        "HOME": "/state/instances/x/run/home",
        "CLOUDSDK_CONFIG": "/state/instances/x/run/home/.config/gcloud",
        "AZURE_CONFIG_DIR": "/state/instances/x/run/home/.azure",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "NO_GCE_CHECK": "true",
        "MLFLOW_ENABLE_AI_GATEWAY": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def test_the_callers_switches_cannot_move_home_or_turn_discovery_back_on() -> None:
    env = ui_environment({}, home="/h", extra={"HOME": "/root", "AWS_EC2_METADATA_DISABLED": "0"})
    assert env["HOME"] == "/h"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
