"""The objects of one UI: a Deployment (the root) owning Service, Ingress/Route, Secret, policy.

Access (issue 17): with the web app's ``web_url``, an Ingress asks the web app's ``/auth/check``
before each request (nginx forward-auth annotations). An OpenShift Route has no forward-auth of
its own, so there the web app is the Route's backend for the UIs' host and proxies ``/vis/``
to each UI's Service after the same check (``proxied``): the UI gets no Route and its
NetworkPolicy admits the web app's pods only. Either way (``guarded``) the UI answers only
requests carrying its per-instance secret header (kept in its Secret): the web app's proxy adds
it, or ``/auth/check`` answers it to nginx, which sets it on the request it passes on
(``auth-response-headers``). So an Ingress of someone else's making (any tenant's, pointing at
the UI's Service past the check) reaches nothing.

Pure builders returning plain dicts (the JSON the API server receives), so they are validated
against the Kubernetes OpenAPI schemas in tests without a cluster.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from idds_vis.deploy.kubernetes.settings import DNS_PORTS, UI_PORT, UI_USER, KubeSettings
from idds_vis.domain.models import Instance
from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.domain.source_policy import MESSAGE_ORIGINS
from idds_vis.staging.redact import redact_url

Obj = dict[str, Any]
MANAGED_BY = "idds-vis"
# The Secret's key holding the raw source (presigned query, user:pass@, tokens): the pod's
# args name it as $(IDDS_VIS_SOURCE), which the kubelet expands from the Secret, so the
# Deployment, its ReplicaSets and Pods only ever hold the reference.
SOURCE_KEY = "IDDS_VIS_SOURCE"
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """A label value (<= 63, alphanumeric at both ends); the raw id goes in an annotation."""
    value = _LABEL_VALUE_BAD.sub("_", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value) or "none"


def labels(inst: Instance) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": inst.tool,
        "app.kubernetes.io/instance": inst.name,
        "app.kubernetes.io/component": "visualization",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "idds-vis",
        "idds-vis/task-id": label_value(inst.task_id),
    }


def public_url(inst: Instance, ks: KubeSettings) -> str:
    return f"{ks.scheme}://{ks.public_host}{inst.prefix}/"


def proxied(ks: KubeSettings) -> bool:
    """OpenShift with a web app: the web app proxies ``/vis/`` to the UI (no Route per UI)."""
    return ks.exposure == "route" and bool(ks.web_url)


def guarded(ks: KubeSettings) -> bool:
    """With a web app the UI answers only requests with its proxy secret (ui/proxy_guard.py):
    the web app's proxy (``proxied``) or nginx, from ``/auth/check``'s answer, adds it."""
    return bool(ks.web_url)


def service_host(inst: Instance, ks: KubeSettings) -> str:
    """The UI's Service as pods of any namespace reach it (cluster DNS)."""
    return f"{inst.name}.{ks.namespace}.svc"


def service_origin(inst: Instance, ks: KubeSettings) -> str:
    return f"http://{service_host(inst, ks)}"


def shown_source(source: str) -> str:
    """The source as objects, errors and logs may show it: no credentials, no signed query."""
    return redact_url(source)


def annotations_for(
    inst: Instance, ks: KubeSettings, expires_at: datetime | None
) -> dict[str, str]:
    notes = {"idds-vis/task-id": inst.task_id, "idds-vis/public-url": public_url(inst, ks)}
    if expires_at is not None:
        stamp = expires_at.isoformat(timespec="seconds")
        # janitor/expires is the in-cluster backstop should every agent be gone.
        notes.update({"idds-vis/expires-at": stamp, "janitor/expires": stamp})
    return notes


def _meta(inst: Instance, ks: KubeSettings, owner: Obj | None) -> Obj:
    meta: Obj = {"name": inst.name, "namespace": ks.namespace, "labels": labels(inst)}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def _guard_args(inst: Instance, ks: KubeSettings) -> list[str]:
    """A message's source is staged by the pod under the same address guard as the agent's
    (loopback, private, link-local refused unless listed); the NetworkPolicy is the second net."""
    if inst.origin not in MESSAGE_ORIGINS:
        return []
    args = ["--guard-addresses"]
    for entry in ks.allow_private_addresses:
        args += ["--allow-private-address", entry]
    return args


def ui_container_limits(ks: KubeSettings, probe: Obj) -> Obj:
    """What every UI container has, cold or standby: resources, the three probes (``probe``
    says how one checks the UI), a locked-down security context and the two writable mounts."""
    return {
        "resources": {
            "requests": {"cpu": ks.cpu_request, "memory": ks.memory_request},
            "limits": {"cpu": ks.cpu_limit, "memory": ks.memory_limit},
        },
        "startupProbe": {
            **probe,
            "periodSeconds": 2,
            "failureThreshold": max(1, ks.start_seconds // 2),
        },
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 4},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "data", "mountPath": "/data"},
        ],
    }


def deployment(
    inst: Instance, ks: KubeSettings, source: str, expires_at: datetime | None, secret: bool
) -> Obj:
    """``source`` appears only redacted (the raw one is in the Secret, see ``dependents``);
    ``secret``: the source needs credentials, which the pod reads from the Secret too."""
    # Guarded (ui/proxy_guard.py), the UI answers only requests with its secret; the kubelet's
    # probes cannot carry it without writing it into this object, so they only connect (the
    # agent's probe sends it: ``Deployment.probe_headers``).
    probe: Obj = ({"tcpSocket": {"port": "http"}} if guarded(ks)
                  else {"httpGet": {"path": f"{inst.prefix}/health", "port": "http"}})  # fmt: skip
    container: Obj = {
        "name": "ui",
        "image": ks.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--source",
            f"$({SOURCE_KEY})",
            "--prefix",
            inst.prefix,
            "--host",
            "0.0.0.0",
            "--port",
            str(UI_PORT),
            "--allowed-host",
            ks.public_host,
            "--cors-origin",
            f"{ks.scheme}://{ks.public_host}",
            "--workdir",
            "/data/ui",
            "--max-bytes",
            str(ks.max_bytes),
            "--max-files",
            str(ks.max_files),
            *_guard_args(inst, ks),
            # The web app's proxy and the agent's probe name the Service as the Host.
            *(["--allowed-host", service_host(inst, ks)] if ks.web_url else []),
        ],
        "ports": [{"name": "http", "containerPort": UI_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "HOME", "value": "/tmp"},
            {
                "name": SOURCE_KEY,
                "valueFrom": {"secretKeyRef": {"name": inst.name, "key": SOURCE_KEY}},
            },
        ],
        **ui_container_limits(ks, probe),
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": inst.name}}]
    if guarded(ks):
        container["env"].append({
            "name": PROXY_SECRET_ENV,
            "valueFrom": {"secretKeyRef": {"name": inst.name, "key": PROXY_SECRET_ENV}},
        })  # fmt: skip
    meta = _meta(inst, ks, None)
    meta["annotations"] = annotations_for(inst, ks, expires_at)
    meta["annotations"]["idds-vis/source"] = shown_source(source)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": inst.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels(inst)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UI_USER,
                        "runAsGroup": UI_USER,
                        "fsGroup": UI_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        {"name": "data", "emptyDir": {"sizeLimit": ks.data_size_limit}},
                    ],
                },
            },
        },
    }


def service(inst: Instance, ks: KubeSettings, owner: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inst, ks, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": inst.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def ingress(inst: Instance, ks: KubeSettings, owner: Obj) -> Obj:
    spec: Obj = {
        "rules": [
            {
                "host": ks.public_host,
                "http": {
                    "paths": [
                        {
                            "path": inst.prefix,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": inst.name, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ]
    }
    if ks.ingress_class:
        spec["ingressClassName"] = ks.ingress_class
    if ks.tls_secret:
        spec["tls"] = [{"hosts": [ks.public_host], "secretName": ks.tls_secret}]
    meta = _meta(inst, ks, owner)
    if ks.web_url:
        meta.setdefault("annotations", {}).update(forward_auth(inst, ks.web_url))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": spec,
    }


def forward_auth(inst: Instance, web_url: str) -> dict[str, str]:
    """nginx ingress forward-auth (issue 17): each request to the UI is first checked by the
    web app's ``/auth/check`` (2xx passes, 401 signs in, 403 refuses); a browser without a
    session signs in at the web app and comes back to the UI's page (``next``, a path: the
    web app sends a browser nowhere else, so the UI shares its host). The check's answer
    carries the UI's proxy secret, which nginx sets on the request it passes to the UI
    (``auth-response-headers``: ingress-nginx writes ``proxy_set_header`` for each name, so a
    client's own header of that name never reaches the UI)."""
    base = web_url.rstrip("/")
    return {
        "nginx.ingress.kubernetes.io/auth-url": f"{base}/auth/check",
        "nginx.ingress.kubernetes.io/auth-method": "GET",
        "nginx.ingress.kubernetes.io/auth-signin": (
            f"{base}/auth/login?next={quote(inst.prefix + '/', safe='')}"
        ),
        # The signin URL names where to come back already: nginx adds no rd= of its own.
        "nginx.ingress.kubernetes.io/auth-signin-redirect-param": "next",
        "nginx.ingress.kubernetes.io/auth-response-headers": PROXY_HEADER,
    }


def route(inst: Instance, ks: KubeSettings, owner: Obj) -> Obj:
    spec: Obj = {
        "host": ks.public_host,
        "path": inst.prefix,
        "to": {"kind": "Service", "name": inst.name, "weight": 100},
        "port": {"targetPort": "http"},
    }
    if ks.scheme == "https":
        spec["tls"] = {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    return {
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": _meta(inst, ks, owner),
        "spec": spec,
    }


def secret(inst: Instance, ks: KubeSettings, owner: Obj, values: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(inst, ks, owner),
        "stringData": dict(values),
    }


def _egress(ks: KubeSettings) -> list[Obj]:
    """Cluster DNS (any pod, DNS ports only), then exactly the operator's ``ui_egress``: the
    pod's serve-ui stages the source itself, so it needs its artefact servers and nothing else
    (no cluster services, no cloud metadata endpoint, no Internet at large)."""
    dns_ports = [{"port": p, "protocol": proto} for p in DNS_PORTS for proto in ("UDP", "TCP")]
    rules: list[Obj] = [{"to": [{"namespaceSelector": {}}], "ports": dns_ports}]
    for allowed in ks.egress:
        block: Obj = {"cidr": allowed.cidr}
        if allowed.excepted:
            block["except"] = list(allowed.excepted)
        rule: Obj = {"to": [{"ipBlock": block}]}
        if allowed.ports:
            rule["ports"] = [{"port": p, "protocol": proto} for p, proto in allowed.ports]
        rules.append(rule)
    return rules


def _callers(ks: KubeSettings) -> list[Obj]:
    """Who may connect to the UI pod: the ingress controller's pods (not when the web app
    proxies, on OpenShift), and with a web app its pods in the agent's namespace."""
    callers: list[Obj] = []
    if not proxied(ks):
        callers.append({"namespaceSelector": {"matchLabels": ks.ingress_namespace_labels}})
    if ks.web_url:
        agent_ns = ks.agent_namespace or ks.namespace
        callers.append({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": agent_ns}},
            "podSelector": {"matchLabels": dict(ks.agent_pod_labels)},
        })  # fmt: skip
    return callers


def network_policy(inst: Instance, ks: KubeSettings, owner: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(inst, ks, owner),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/instance": inst.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": _callers(ks), "ports": [{"port": UI_PORT, "protocol": "TCP"}]}],
            "egress": _egress(ks),
        },
    }


def dependents(
    inst: Instance, ks: KubeSettings, owner: Obj, secret_values: dict[str, str] | None
) -> list[Obj]:
    """Everything the root Deployment owns, in the order they are created: the Secret first,
    since the pod cannot start without its source (nor, when ``guarded``, its proxy secret,
    which ``secret_values`` then holds under ``PROXY_SECRET_ENV``)."""
    values = {**(secret_values or {}), SOURCE_KEY: inst.source or ""}
    made = [secret(inst, ks, owner, values), service(inst, ks, owner)]
    if ks.exposure == "ingress":
        made.append(ingress(inst, ks, owner))
    elif not proxied(ks):
        made.append(route(inst, ks, owner))
    return [*made, network_policy(inst, ks, owner)]


def exposure_kinds(ks: KubeSettings) -> tuple[str, ...]:
    """The kind that exposes a UI, if any of its own (none when the web app proxies it)."""
    if proxied(ks):
        return ()
    return ("Route",) if ks.exposure == "route" else ("Ingress",)


DEPENDENT_KINDS = ("Secret", "Service", "NetworkPolicy")  # plus the exposure's kind
