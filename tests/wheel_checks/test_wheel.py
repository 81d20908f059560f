"""What users install: the wheel holds every package and data file, and works when installed.

``pip install -e`` (tests/run.sh) imports from the checkout, so it never notices a package the
wheel leaves out (idds_vis/api/auth had no __init__.py: find_packages skipped it, commit bf54943).
These tests build the sdist and the wheel from it, install the wheel into a fresh venv and run
the installed ``idds-vis`` from a directory outside the checkout.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.wheel_checks.conftest import DEBIAN_PYTHON, ROOT, Dists, WheelVenv

pytestmark = pytest.mark.packaging
PACKAGE = ROOT / "idds_vis"
# Data files the code opens at run time (setup.py package_data), as directories of the package.
DATA_DIRS = ("api/templates", "api/static")


def source_dirs_with_python() -> list[Path]:
    return sorted({p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts})


def source_files(suffix: str = ".py") -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob(f"*{suffix}")
        if "__pycache__" not in p.parts
    )


def data_files() -> list[str]:
    files = [(PACKAGE / "py.typed").relative_to(ROOT).as_posix()]
    for rel in DATA_DIRS:
        files += [p.relative_to(ROOT).as_posix() for p in (PACKAGE / rel).rglob("*") if p.is_file()]
    return sorted(files)


def test_every_directory_with_python_files_is_a_package() -> None:
    # find_packages() only finds directories with an __init__.py: any other is left out.
    missing = [d.relative_to(ROOT).as_posix() for d in source_dirs_with_python()
               if not (d / "__init__.py").exists()]  # fmt: skip
    assert not missing, f"directories with .py files but no __init__.py: {missing}"


def test_every_package_and_module_is_in_the_wheel(dists: Dists) -> None:
    names = dists.wheel_names()
    packages = [d.relative_to(ROOT).as_posix() for d in source_dirs_with_python()]
    assert not [p for p in packages if f"{p}/__init__.py" not in names]
    assert not [f for f in source_files() if f not in names]


def test_templates_static_files_and_py_typed_are_in_the_wheel_and_the_sdist(
    dists: Dists,
) -> None:
    expected = data_files()
    assert any(f.endswith(".html") for f in expected) and any("/static/" in f for f in expected)
    assert not [f for f in expected if f not in dists.wheel_names()]
    with tarfile.open(dists.sdist) as sdist:
        # The sdist's names sit under idds_vis-0.1.0/; the wheel above was built from it.
        in_sdist = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert not [f for f in expected if f not in in_sdist]


def test_the_wheel_declares_the_console_script_and_the_extras(dists: Dists) -> None:
    names = dists.wheel_names()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    import zipfile

    with zipfile.ZipFile(dists.wheel) as whl:
        assert "idds-vis = idds_vis.cli.main:main" in whl.read(entry_points).decode()
        meta = whl.read(metadata).decode()
    for extra in ("ui", "demo", "rucio", "test", "dev"):
        assert f"Provides-Extra: {extra}" in meta
    # The demo's training needs scikit-learn; the UI alone does not ask for it.
    assert re.search(r"Requires-Dist: scikit-learn.*extra == \"demo\"", meta)
    assert not re.search(r"Requires-Dist: scikit-learn.*extra == \"ui\"", meta)


def test_the_installed_package_is_the_wheels_not_the_checkout(wheel_venv: WheelVenv) -> None:
    code = "import idds_vis; print(idds_vis.__file__)"
    done = wheel_venv.run(str(wheel_venv.python), "-c", code)
    assert done.returncode == 0, done.stderr
    where = Path(done.stdout.splitlines()[0])
    assert where.is_relative_to(wheel_venv.root) and not where.is_relative_to(ROOT)


def test_the_venv_runs_on_debians_own_python(wheel_venv: WheelVenv) -> None:
    if not DEBIAN_PYTHON.exists():
        pytest.skip(f"{DEBIAN_PYTHON} (Debian's python3.11) is not installed")
    done = wheel_venv.run(str(wheel_venv.python), "-c", "import sys; print(sys.version)")
    assert done.stdout.startswith("3.11."), done.stdout
    # Every module of the wheel imports on it (the agent's, the UI's and the demo's); __main__
    # would run the CLI.
    code = ("import importlib, pkgutil, idds_vis\n"
            "for m in pkgutil.walk_packages(idds_vis.__path__, 'idds_vis.'):\n"
            "    if not m.name.endswith('.__main__'):\n"
            "        importlib.import_module(m.name)\n")  # fmt: skip
    # The UI's ASGI module reads the prefix serve-ui gives it at import, as uvicorn loads it.
    prefix = {"_MLFLOW_STATIC_PREFIX": "/vis/x", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = wheel_venv.run(str(wheel_venv.python), "-c", code, timeout=300, env=prefix)
    assert done.returncode == 0, done.stderr[-3000:]


def test_installed_cli_version_and_help(wheel_venv: WheelVenv) -> None:
    version = wheel_venv.run(str(wheel_venv.cli), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "idds-vis, version 0.1.0"
    helped = wheel_venv.run(str(wheel_venv.cli), "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("agent", "serve-ui", "demo", "web"):
        assert re.search(rf"^\s+{command}\s", helped.stdout, re.M), helped.stdout


def test_installed_package_has_its_templates_and_static_files(wheel_venv: WheelVenv) -> None:
    code = ("from importlib.resources import files\n"
            "root = files('idds_vis')\n"
            "for rel in %r:\n"
            "    assert root.joinpath(rel).is_file(), rel\n"
            "print(root)\n") % [f.removeprefix("idds_vis/") for f in data_files()]  # fmt: skip
    done = wheel_venv.run(str(wheel_venv.python), "-c", code)
    assert done.returncode == 0, done.stderr[-2000:]


def test_installed_demo_goes_from_training_to_expired(wheel_venv: WheelVenv) -> None:
    # The demo trains (a few seconds), stages, starts a real UI, probes it, and tears it down at
    # its TTL: the shortest TTL that still leaves the UI up long enough to be seen ready.
    done = wheel_venv.run(str(wheel_venv.cli), "demo", "--json", "--ttl", "3s", timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    phases = [line["phase"] for line in lines]
    assert done.returncode == 0, (phases, done.stderr[-3000:])
    assert "ready" in phases and phases[-1] == "expired", phases
    (ready,) = [line for line in lines if line["phase"] == "ready"]
    assert ready["url"].startswith("http://127.0.0.1:")
