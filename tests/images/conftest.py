"""The base and both images, built once per session (and reused across runs by content hash).

Where podman is absent the image tests skip, except under CI (``$CI`` set), where they fail:
CI must build and run the images it ships.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.demo_data import make_demo_archive
from tests.images.podman import (
    PodmanMissing,
    ensure_base,
    ensure_image,
    host_pip_config,
    require_podman,
)


@dataclass(frozen=True)
class Images:
    base: str
    ui: str
    agent: str


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    try:
        require_podman()
    except PodmanMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {exc}", pytrace=False)
        pytest.skip(str(exc))
    timings = []
    started = time.monotonic()
    base = ensure_base()
    timings.append(f"base {time.monotonic() - started:.0f} s")
    pip = host_pip_config(tmp_path_factory.mktemp("pip"))
    built = {}
    for name in ("ui", "agent"):
        started = time.monotonic()
        built[name] = ensure_image(name, base, pip)
        timings.append(f"{name} {time.monotonic() - started:.0f} s")
    print(f"\nimages ready ({', '.join(timings)})", flush=True)
    return Images(base, built["ui"], built["agent"])


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo's real training output as the tar.gz BigPanDA would serve."""
    yield make_demo_archive(tmp_path_factory.mktemp("demo-training"))
