"""The sdist and wheel, built once per session, and ONE fresh venv with the wheel installed.

The venv is made from Debian's own Python (``/usr/bin/python3.11``, 3.11.2) when the machine has
it, so one install checks both that the wheel is complete and that it works on the system
Python users have; pip's cache (``~/.cache/pip``) keeps it to about a minute after the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
# The extras a user of the demo installs (README): the UI runtime and the demo's training.
EXTRAS = "ui,demo"
INSTALL_TIMEOUT = 1200.0


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return set(whl.namelist())


@dataclass(frozen=True)
class WheelVenv:
    root: Path
    python: Path
    cli: Path
    workdir: Path  # outside the checkout, so nothing is imported from the source tree

    def run(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env = {**base, **(env or {})}
        return subprocess.run(args, cwd=self.workdir, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip


def _checked(args: list[str], timeout: float, **kw: object) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)  # type: ignore[call-overload]  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} … failed:\n{done.stdout[-3000:]}"
                           f"{done.stderr[-3000:]}")  # fmt: skip


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """``python -m build``: the sdist, then the wheel built from that sdist (as a release is)."""
    out = tmp_path_factory.mktemp("dist")
    _checked([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=600)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dists(sdist, wheel)


@pytest.fixture(scope="session")
def wheel_venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    base = DEBIAN_PYTHON if DEBIAN_PYTHON.exists() else Path(sys.executable)
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    _checked([str(base), "-m", "venv", str(root)], timeout=300)
    python = root / "bin" / "python"
    # Not editable, from the wheel file, with the extras; pip's cache and config are the host's.
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_NO_CACHE_DIR", "PYTHONPATH")}
    _checked([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"{dists.wheel}[{EXTRAS}]"], timeout=INSTALL_TIMEOUT, env=env)  # fmt: skip
    workdir = tmp_path_factory.mktemp("elsewhere")
    return WheelVenv(root, python, root / "bin" / "idds-vis", workdir)
