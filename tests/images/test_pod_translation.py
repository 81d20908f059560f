"""The pod-spec-to-podman translation the image tests rely on (no podman needed)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from tests.images.pod import container_argv, podman_run_args

SOURCE = "https://example.org/user.x.metrics.tgz"


def ui_objects() -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    key = InstanceKey("translation-1", "mlflow")
    now = datetime.now(UTC)
    inst = Instance(task_id=key.task_id, tool=key.tool, name=key.name, phase=Phase.DEPLOYING,
                    source=SOURCE, ttl=timedelta(hours=1),
                    created_at=now, updated_at=now)  # fmt: skip
    ks = KubeSettings(namespace="ns")
    dep = objects.deployment(inst, ks, SOURCE, None, secret=False)
    dep["metadata"]["uid"] = "u-1"
    owned = objects.dependents(inst, ks, dep, None)
    secrets = {o["metadata"]["name"]: o["stringData"] for o in owned if o["kind"] == "Secret"}
    return dep["spec"]["template"]["spec"], secrets


def test_the_ui_pods_security_context_becomes_podman_options(tmp_path: Path) -> None:
    pod, secrets = ui_objects()
    args = podman_run_args(pod, tmp_path, secrets=secrets)
    joined = " ".join(args)
    for expected in ("--user 10001:10001", "--group-add 10001", "--read-only",
                     "--read-only-tmpfs=false", "--security-opt no-new-privileges",
                     "--cap-drop=ALL", "--tmpfs /tmp:", "--tmpfs /data:"):  # fmt: skip
        assert expected in joined, expected
    # The Secret's value reaches the container through a private env file, not the command line.
    assert SOURCE not in joined
    env_file = Path(args[args.index("--env-file") + 1])
    assert env_file.stat().st_mode & 0o077 == 0
    assert f"{objects.SOURCE_KEY}={SOURCE}\n" in env_file.read_text()
    argv = container_argv(pod, secrets)
    assert argv[argv.index("--source") + 1] == SOURCE  # $(IDDS_VIS_SOURCE), as the kubelet does


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("container", "privileged", True),
        ("container", "procMount", "Unmasked"),
        ("pod", "sysctls", [{"name": "net.core.somaxconn", "value": "1024"}]),
        ("pod", "supplementalGroups", [5]),
    ],
)
def test_a_security_field_with_no_translation_fails_loudly(
    tmp_path: Path, where: str, field: str, value: object
) -> None:
    # A new field in the Deployment must not be silently dropped from what the tests run.
    pod, secrets = ui_objects()
    pod = copy.deepcopy(pod)
    target = pod["containers"][0] if where == "container" else pod
    target["securityContext"][field] = value
    with pytest.raises(ValueError, match=field):
        podman_run_args(pod, tmp_path, secrets=secrets)


def test_a_pod_spec_field_with_no_translation_fails_loudly(tmp_path: Path) -> None:
    pod, secrets = ui_objects()
    pod = {**pod, "hostNetwork": True}
    with pytest.raises(ValueError, match="hostNetwork"):
        podman_run_args(pod, tmp_path, secrets=secrets)
