"""A real training's artefacts (the demo's), made once per test session."""

from __future__ import annotations

from pathlib import Path

from idds_vis.cli.demo_training import EXPERIMENT, pack, train

__all__ = ["EXPERIMENT", "make_demo_archive"]


def make_demo_archive(workdir: Path) -> Path:
    job = train(workdir)
    return pack(job, workdir / "user.demo.metrics.tgz")
