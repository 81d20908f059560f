"""The UI process: prepare a staged MLflow store read-only and exec the MLflow server on it.

This is the only package besides the demo that imports mlflow; the agent never does.
"""
