"""Virtualenvs for servers whose pins clash with ours (iDDS, panda-server), built once and cached.

Under ``~/.cache/idds-vis-tests`` (``$XDG_CACHE_HOME`` if set), named after a hash of what goes
in (the Python version and the pins), so changing a pin builds a new one. A lock lets parallel
test sessions share a build; a ``.ready`` marker tells a finished build from an interrupted one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BUILD_TIMEOUT = 1200.0  # panda-server and its 94 pins take ~3 minutes here


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idds-vis-tests"


def venv_dir(prefix: str, key: Sequence[Any]) -> Path:
    digest = hashlib.sha256(json.dumps([sys.version_info[:2], *key]).encode()).hexdigest()
    return cache_root() / f"{prefix}-{digest[:12]}"


def pip_install(python: Path, *args: str, **kwargs: Any) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        **kwargs,
    )
    if done.returncode != 0:
        # An error, not a skip: the machine has PyPI; a failed install is a real problem.
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def cached_venv(
    what: str, target: Path, install: Callable[[Path], None], record: Sequence[str]
) -> Path:
    """The venv's python; ``install(python)`` fills a new venv, ``record`` goes in its marker."""
    python = target / "bin" / "python"
    ready = target / ".ready"
    if ready.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        # Another test session may be building the same venv: wait for it, then reuse it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return python
        shutil.rmtree(target, ignore_errors=True)  # a build that was interrupted
        print(f"\nbuilding the {what} venv {target} (once) ...", flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        install(python)
        ready.write_text("\n".join(record) + "\n")
        print(f"{what} venv ready in {time.monotonic() - started:.0f} s", flush=True)
    return python
