"""A real training's artefacts (the demo's), made once per test session."""

from __future__ import annotations

from pathlib import Path

from idds_vis.cli.demo_training import EXPERIMENT, pack, train

__all__ = ["EXPERIMENT", "make_demo_archive"]


def make_demo_archive(workdir: Path) -> Path:
    job = train(workdir)
    return pack(job, workdir / "user.demo.metrics.tgz")


_FILE_STORE_TRAINING = """
import os, sys
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
import mlflow
job = sys.argv[1]
mlflow.set_tracking_uri("file://" + job + "/mlruns")
mlflow.set_experiment("file-store-training")
with mlflow.start_run(run_name="epochs"):
    mlflow.log_param("optimizer", "sgd")
    for step in range(50):
        mlflow.log_metric("val_loss", 1.0 / (step + 1), step=step)
    with open(job + "/summary.txt", "w") as out:
        out.write("best val_loss 0.02\\n")
    mlflow.log_artifact(job + "/summary.txt")
"""


def make_file_store_archive(workdir: Path) -> Path:
    """A real ``mlruns`` file store as an older training job leaves it, zipped."""
    import shutil
    import subprocess
    import sys

    job = workdir / "fs-job"
    job.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", _FILE_STORE_TRAINING, str(job)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return Path(shutil.make_archive(str(workdir / "fs-job-output"), "zip", job))
