"""Every test that starts UIs must leave none behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.settings import KubeSettings
from tests.demo_data import make_demo_archive
from tests.k8s_emulator import KubeEmulator


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training's artefacts (the demo's), packed as a task leaves them; made once."""
    return make_demo_archive(tmp_path_factory.mktemp("training"))


# Every process this test run starts inherits this mark, so the check below never touches
# the UIs of another run (or of a person) on the same machine.
RUN_MARK = os.environ.setdefault("IDDS_VIS_TEST_RUN", uuid.uuid4().hex)


def ui_processes() -> dict[int, str]:
    found = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        name = env.get("IDDS_VIS_UI_NAME")
        if name and env.get("IDDS_VIS_TEST_RUN") == RUN_MARK:
            found[proc.pid] = name
    return found


@pytest.fixture(autouse=True)
def no_ui_left_behind() -> Iterator[None]:
    before = set(ui_processes())
    yield
    leaked = {pid: name for pid, name in ui_processes().items() if pid not in before}
    for pid in leaked:
        psutil.Process(pid).kill()
    # A handful of names says enough; hundreds would push the test's own failure out of a
    # truncated CI log.
    names = sorted(leaked.values())
    assert leaked == {}, f"{len(names)} UI processes left behind: {names[:5]}" + (
        " ..." if len(names) > 5 else ""
    )


# --- the Kubernetes API emulator and a deployer on it (test_kube_deployer, test_kube_lagging_gc)


@pytest.fixture
async def emu() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
async def deployer(emu: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubernetesDeployer]:
    from tests.integration.test_kube_deployer import NS

    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    kube = KubeClient(str(kubeconfig), call_timeout=5, retry_budget=10)
    yield KubernetesDeployer(KubeSettings(namespace=NS), kube, watch_silence=2)
    await kube.close()
