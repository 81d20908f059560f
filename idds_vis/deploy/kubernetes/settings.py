"""What the Kubernetes objects of one UI depend on, besides the instance itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

UI_PORT = 5000
UI_USER = 10001


@dataclass(frozen=True)
class KubeSettings:
    namespace: str
    image: str = "idds-vis-ui:0.1.0"
    public_host: str = "vis.example.org"
    scheme: Literal["http", "https"] = "https"
    exposure: Literal["ingress", "route"] = "ingress"
    ingress_class: str | None = "nginx"
    tls_secret: str | None = None
    # Pods of the ingress controller (or the OpenShift router) are the only callers admitted.
    ingress_namespace_labels: dict[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "ingress-nginx"}
    )
    # Measured: the UI settles at about 250 MB RSS in one process (tests/bench); listing a
    # large artefact tree or a model page adds transient memory, hence the limit's headroom.
    cpu_request: str = "100m"
    cpu_limit: str = "1"
    memory_request: str = "320Mi"
    memory_limit: str = "768Mi"
    data_size_limit: str = "4Gi"
    start_seconds: int = 180
    max_bytes: int = 2 * 1024**3
    max_files: int = 20_000
