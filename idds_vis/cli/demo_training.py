"""A real, tiny training logged through the MLflow API, left the way a training task leaves it."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

EXPERIMENT = "idds-vis-demo"


def train(workdir: Path, epochs: int = 60) -> Path:
    """Logistic regression by gradient descent on synthetic data; returns the job directory."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    job = workdir / "job"
    job.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{job / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(job / "mlartifacts").as_uri())
    mlflow.set_experiment(EXPERIMENT)

    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4))
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.5, size=400) > 0).astype(float)
    weights = np.zeros(4)
    lr = 0.1
    with mlflow.start_run(run_name="demo-training") as run:
        mlflow.log_params({"learning_rate": lr, "epochs": epochs, "features": 4, "samples": 400})
        for step in range(epochs):
            p = 1.0 / (1.0 + np.exp(-(x @ weights)))
            loss = float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)))
            weights -= lr * x.T @ (p - y) / len(y)
            accuracy = float(np.mean((p > 0.5) == y))
            mlflow.log_metrics({"loss": loss, "accuracy": accuracy}, step=step)
        report = workdir / "weights.txt"
        report.write_text("\n".join(f"w{i} = {w:.4f}" for i, w in enumerate(weights)) + "\n")
        mlflow.log_artifact(str(report))
        model = LogisticRegression().fit(x, y)
        # Fixed requirements skip pip inference, which is slow and wants the network.
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        mlflow.set_tag("panda.task", "demo")
        _ = run.info.run_id
    return job


def pack(job: Path, archive: Path) -> Path:
    """A tarball of the job's MLflow output, like the ones BigPanDA's downloadhpometrics serves."""
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(job.iterdir()):
            tar.add(item, arcname=f"output/{item.name}")
    return archive
