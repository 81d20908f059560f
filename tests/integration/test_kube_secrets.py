"""The UI pod stages its own data, so the deployer gives it its source and that source's
credentials: a Secret owned by the root Deployment, exactly the needed values, read by the
container as its environment; a source that needs no credentials still travels in it.
Against the Kubernetes API emulator, with the deployer built by the real wiring from settings
that name credential files."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.objects import SOURCE_KEY
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.phases import Phase
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_deployer, credential_files
from idds_vis.staging.credentials import Credentials
from tests.k8s_emulator import KubeEmulator

NS = "vis"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
TOKEN = "bigpanda-bearer-token-0c2d"


def instance(task_id: str, source: str) -> Instance:
    return Instance(
        task_id=task_id,
        tool="mlflow",
        name=InstanceKey(task_id).name,
        phase=Phase.DEPLOYING,
        source=source,
        ttl=timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[KubeEmulator, KubernetesDeployer, Settings]]:
    (tmp_path / "s3.id").write_text("AKIAIOSFODNN7EXAMPLE\n")
    (tmp_path / "s3.secret").write_text(S3_SECRET + "\n")
    (tmp_path / "bigpanda.token").write_text(TOKEN)
    async with KubeEmulator() as emu:
        settings = Settings(
            state_dir=tmp_path / "state", deployer="kubernetes", namespace=NS,
            kubeconfig=str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS)),
            s3_endpoint_url="https://s3.example.org",
            s3_access_key_file=str(tmp_path / "s3.id"),
            s3_secret_key_file=str(tmp_path / "s3.secret"),
            http_token_files={"bigpanda.example.org": str(tmp_path / "bigpanda.token")},
        )  # fmt: skip
        deployer = build_deployer(settings)
        assert isinstance(deployer, KubernetesDeployer)
        try:
            yield emu, deployer, settings
        finally:
            await deployer.kube.close()


def secret_values(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def ui_container(emu: KubeEmulator, name: str) -> dict:
    root = emu.get("deployments", name, NS)
    assert root is not None
    (container,) = root["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        ("s3://artefacts/tasks/42/", {"IDDS_VIS_S3_ENDPOINT_URL", "IDDS_VIS_S3_ACCESS_KEY_ID",
                                      "IDDS_VIS_S3_SECRET_ACCESS_KEY"}),
        ("https://bigpanda.example.org/idds/downloadhpometrics/?workloadid=42",
         {"IDDS_VIS_HTTP_TOKEN_HOST", "IDDS_VIS_HTTP_TOKEN"}),
    ],
)  # fmt: skip
async def test_a_source_with_credentials_gets_an_owned_secret_the_pod_reads(
    setup: tuple[KubeEmulator, KubernetesDeployer, Settings], source: str, keys: set[str]
) -> None:
    emu, deployer, settings = setup
    inst = instance("secret-42", source)
    await deployer.deploy(inst, None)

    root = emu.get("deployments", inst.name, NS)
    secret = emu.get("secrets", inst.name, NS)
    assert root is not None and secret is not None
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", inst.name,
                                                            root["metadata"]["uid"])  # fmt: skip
    values = secret_values(secret)
    assert set(values) == keys | {SOURCE_KEY}  # what this source needs, nothing for others
    # What the pod gets from it is what the agent would stage with.
    expected = credential_files(settings).load().pod_env(source)
    assert values == {**(expected or {}), SOURCE_KEY: source}
    back = Credentials.from_env(values)
    assert back.pod_env(source) == expected
    container = ui_container(emu, inst.name)
    assert container["envFrom"] == [{"secretRef": {"name": inst.name}}]
    assert S3_SECRET not in str(root) and TOKEN not in str(root)

    await deployer.delete(inst)
    deadline = asyncio.get_running_loop().time() + 30
    while emu.get("secrets", inst.name, NS) is not None:  # removed with its owner
        assert asyncio.get_running_loop().time() < deadline, "the Secret outlived its owner"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "source",
    ["/data/tasks/42.tgz", "https://other.example.org/x.tgz", "file:///data/task"],
)
async def test_a_source_without_credentials_gets_a_secret_with_the_source_only(
    setup: tuple[KubeEmulator, KubernetesDeployer, Settings], source: str
) -> None:
    emu, deployer, _settings = setup
    inst = instance("plain-7", source)
    deployment = await deployer.deploy(inst, None)
    secret = emu.get("secrets", inst.name, NS)
    assert secret is not None and secret_values(secret) == {SOURCE_KEY: source}
    assert [s["metadata"]["name"] for s in emu.list("secrets", NS)] == [inst.name]
    assert "envFrom" not in ui_container(emu, inst.name)  # no credentials to read
    assert "Secret" in {o["kind"] for o in deployment.handle["objects"]}
