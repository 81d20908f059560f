"""The UI process's environment (issue 15, class 3, the process part): whatever the agent's
environment and HOME hold (AWS keys, ``~/.aws/credentials``, idds-vis staging secrets, anything
else), the UI process has none of it: an allowlisted environment, a private HOME inside its
state directory, and instance metadata off. Read from ``/proc/<pid>/environ`` of the running UI
(the MLflow server serve-ui has exec'd into), spawned by the local deployer and, as the
Kubernetes pod runs it, by ``idds-vis serve-ui`` itself.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idds_vis.deploy.local import LocalProcessDeployer
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.staging import ArchiveStager
from tests.integration.conftest import demo_archive, no_ui_left_behind  # noqa: F401
from tests.security.ui_process import agent_environment, serve_ui

pytestmark = pytest.mark.mlflow

RANDOM = f"IDDS_VIS_SEC_RANDOM_{uuid.uuid4().hex[:8].upper()}"
# What the agent's environment holds and the UI must not: cloud credentials and settings,
# idds-vis's own staging secrets (the Secret in a pod), MLflow settings, anything else.
FOREIGN = {
    "AWS_ACCESS_KEY_ID": "AKIAAGENTKEY0000000",
    "AWS_SECRET_ACCESS_KEY": "agent-secret-access-key",
    "AWS_SESSION_TOKEN": "agent-session-token",
    "AWS_PROFILE": "agent-profile",
    "GOOGLE_APPLICATION_CREDENTIALS": "/agent/gcp.json",
    "AZURE_CLIENT_SECRET": "agent-azure-secret",
    "IDDS_VIS_S3_ACCESS_KEY_ID": "staging-key",
    "IDDS_VIS_S3_SECRET_ACCESS_KEY": "staging-secret",
    "IDDS_VIS_HTTP_TOKEN": "staging-token",
    "IDDS_VIS_RUCIO_PASSWORD": "rucio-password",
    "IDDS_VIS_STOMP_PASSWORD": "broker-password",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/elsewhere",
    RANDOM: "random",
}
SECRET_VALUES = [v for k, v in FOREIGN.items() if k != "AWS_PROFILE"] + ["aws-file-secret"]


def agent_home(tmp_path: Path) -> Path:
    """The agent's HOME, with AWS credentials where every AWS SDK looks for them."""
    home = tmp_path / "agent-home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAFILEKEY\naws_secret_access_key = aws-file-secret\n"
    )
    return home


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def assert_sealed(env: dict[str, str], home: Path, agent_home: Path) -> None:
    assert not set(FOREIGN) & set(env), sorted(set(FOREIGN) & set(env))
    leaked = [v for v in SECRET_VALUES if any(v in value for value in env.values())]
    assert leaked == []
    credential_names = ("AWS_ACCESS", "AWS_SECRET", "GOOGLE_", "AZURE_CLIENT")
    assert not [k for k in env if k.startswith(credential_names)]
    assert env["HOME"] == str(home)
    assert str(agent_home) not in "".join(env.values())
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == env["AWS_CONFIG_FILE"] == "/dev/null"
    # The private HOME is the UI's own (MLflow and its libraries may keep caches there):
    # nobody's credentials in it.
    assert home.is_dir() and not (home / ".aws").exists()


async def test_the_local_deployers_ui_inherits_no_credentials_and_has_a_private_home(
    tmp_path: Path,
    demo_archive: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = agent_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    for name, value in FOREIGN.items():
        monkeypatch.setenv(name, value)
    state = tmp_path / "state"
    deployer = LocalProcessDeployer(state, label=f"sec-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    key = InstanceKey("user.sec/env-1")
    inst = Instance(task_id=key.task_id, tool=key.tool, name=key.name, phase=Phase.DEPLOYING,
                    source=str(demo_archive), ttl=timedelta(hours=1), created_at=now,
                    updated_at=now)  # fmt: skip
    staged = await ArchiveStager().stage(
        str(demo_archive), deployer.instance_dir(inst.name) / "staged"
    )
    deployment = await deployer.deploy(inst, staged)
    try:
        await deployer.wait_started(inst, deployment, timeout=180)
        env = environ_of(int(deployment.handle["pid"]))
        assert "uvicorn" in Path(f"/proc/{deployment.handle['pid']}/cmdline").read_text()
        assert_sealed(env, deployer.instance_dir(inst.name) / "run" / "home", home)
        assert env["IDDS_VIS_UI_NAME"] == inst.name  # how the deployer finds it again
        assert [ui.name for ui in await deployer.running()] == [inst.name]
    finally:
        await deployer.delete(inst)


async def test_serve_ui_itself_hands_mlflow_no_credentials(
    tmp_path: Path,
    demo_archive: Path,  # noqa: F811
) -> None:
    """As in a pod: serve-ui gets the staging secrets (and the image's environment) and stages
    with them; the MLflow server it execs into keeps none."""
    home = agent_home(tmp_path)
    workdir = tmp_path / "ui"
    async with serve_ui(demo_archive, workdir, agent_environment(home, **FOREIGN)) as ui:
        env = environ_of(ui.pid)
        assert "uvicorn" in Path(f"/proc/{ui.pid}/cmdline").read_text()
        assert_sealed(env, workdir / "run" / "home", home)
