"""Issue 15, class 6: a source's secrets are readable only in the UI's Secret.

Whoever may read Deployments, ReplicaSets, Pods, Events or the agent's logs must not learn a
source's password, presigned signature and credential, or token. The UI pod still stages the
real source: the kubelet expands ``$(IDDS_VIS_SOURCE)`` in its args from the Secret."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.errors import DeployError
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.fakes import wait_for_phase
from tests.integration.test_kube_deployer import NS, instance, kube_agent
from tests.k8s_emulator import KubeEmulator

PASSWORD = "Pa55w0rd-q8Zr"
CREDENTIAL = "AKIAQ3EGSECRETID%2F20261121%2Fus-east-1%2Fs3%2Faws4_request"
SIGNATURE = "7f3e9a1c5b2d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
TOKEN = "tok-9c41e07d2b"
SOURCE = (
    f"https://jdoe:{PASSWORD}@s3.example.org/artefacts/task-42.tgz"
    f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}"
    f"&X-Amz-Date=20261121T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Signature={SIGNATURE}&token={TOKEN}"
)
SECRET_PARTS = [PASSWORD, CREDENTIAL, unquote(CREDENTIAL), "AKIAQ3EGSECRETID", SIGNATURE, TOKEN]


def leaks(text: str) -> list[str]:
    return [part for part in SECRET_PARTS if part in text]


@pytest.fixture
async def emu() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


async def test_only_the_secret_holds_the_sources_secrets_and_the_pod_still_gets_it(
    emu: KubeEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = kube_agent(tmp_path, emu.write_kubeconfig(tmp_path / "kubeconfig", NS))
    events = agent.events.subscribe()
    await agent.start()
    try:
        await agent.submit(VisRequest("leak-1", source=SOURCE))
        ready = await wait_for_phase(agent, events, "leak-1", {Phase.READY, Phase.FAILED})
        assert ready.phase is Phase.READY, ready.reason

        # Every object the cluster holds (Deployments, Pods, Events, Services, policies...).
        held = [(plural, obj) for plural, obj in emu.store.all_objects()]
        assert {"deployments", "pods", "events"} <= {p for p, _ in held}
        for plural, obj in held:
            if plural == "secrets" and obj["metadata"]["name"] == ready.name:
                continue
            found = leaks(json.dumps(obj))
            assert not found, f"{plural}/{obj['metadata']['name']} holds {found}"
        # ...and what the agent logged while doing it, at every level.
        assert caplog.records
        for record in caplog.records:
            text = f"{record.getMessage()} {record.__dict__}"
            assert not leaks(text), f"log record {record.name}: {record.getMessage()[:200]}"

        # The Deployment shows a redacted source; the pod is started with the real one.
        root = emu.get("deployments", ready.name, NS)
        assert root is not None
        shown = root["metadata"]["annotations"]["idds-vis/source"]
        assert shown.startswith("https://s3.example.org/artefacts/task-42.tgz?") and "***" in shown
        (pod,) = emu.list("pods", NS, f"app.kubernetes.io/instance={ready.name}")
        argv = emu.container_argv(pod, "ui")
        assert argv[argv.index("--source") + 1] == SOURCE
    finally:
        await agent.stop()
        await agent.ledger.close()
        await agent.deployer.kube.close()  # type: ignore[attr-defined]


async def test_a_refusal_quoting_the_source_is_shown_redacted(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """A 422 quotes the offending value back: the server's message is kept, its secrets not."""
    kube = KubeClient(str(emu.write_kubeconfig(tmp_path / "kubeconfig", NS)), retry_budget=5)
    deployer = KubernetesDeployer(KubeSettings(namespace=NS), kube)
    try:
        inst = instance("leak-2")
        inst = type(inst)(**{**inst.__dict__, "source": SOURCE})
        emu.inject_failure(
            422, verb="create", resource="secrets",
            message=f'Secret "{inst.name}" is invalid: stringData[IDDS_VIS_SOURCE]: '
                    f'Invalid value: "{SOURCE}": too odd',
        )  # fmt: skip
        with pytest.raises(DeployError) as caught:
            await deployer.deploy(inst, None)
        reason = str(caught.value)
        assert f'Secret "{inst.name}" is invalid' in reason and "too odd" in reason
        assert "s3.example.org/artefacts/task-42.tgz" in reason
        assert not leaks(reason), reason
    finally:
        await kube.close()


def test_a_workload_id_in_the_source_is_no_secret_and_names_stay_readable() -> None:
    """The real server's 403 names the object (`mlflow-4242-…`); a numeric id in the source's
    query is shown by redact_url, so scrubbing it out of the message only hid the name."""
    from idds_vis.deploy.kubernetes.status import scrubber, source_secrets

    source = f"https://bigpanda.example.org/hpo/?workloadid=4242&sig={SIGNATURE}&token=1234"
    scrub = scrubber(source_secrets(source))
    shown = scrub(f'secrets "mlflow-4242-9773879a" is forbidden (token 1234, sig {SIGNATURE})')
    assert 'secrets "mlflow-4242-9773879a"' in shown
    assert SIGNATURE not in shown and "1234" not in shown  # a token's value, digits or not
