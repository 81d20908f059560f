"""idds-vis: dedicated read-only MLflow UIs for finished PanDA/iDDS ML training tasks."""

__version__ = "0.1.0"
