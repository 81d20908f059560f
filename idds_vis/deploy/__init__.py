"""Deployers: where a UI runs (a local process now, Kubernetes later) and the readiness probe."""
