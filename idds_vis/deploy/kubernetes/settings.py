"""What the Kubernetes objects of one UI depend on, besides the instance itself."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

UI_PORT = 5000
UI_USER = 10001
# Cluster DNS as the pod reaches it: 53 on kube-dns/CoreDNS pods, 5353 on OpenShift's
# dns-default pods (its Service maps 53 to 5353, and a NetworkPolicy sees the pod's port).
DNS_PORTS = (53, 5353)


@dataclass(frozen=True)
class EgressRule:
    """Where a UI pod may connect besides cluster DNS: one CIDR (minus exceptions), some ports."""

    cidr: str
    excepted: tuple[str, ...] = ()
    ports: tuple[tuple[int, str], ...] = ()  # (port, "TCP"|"UDP"); empty: every port


def _port(value: object, where: str) -> tuple[int, str]:
    text = str(value)
    number, _, protocol = text.partition("/")
    protocol = protocol.upper() or "TCP"
    if isinstance(value, bool) or not number.isdigit() or protocol not in ("TCP", "UDP"):
        raise ValueError(f"{where}: {text!r} is not a port (443, or 53/UDP)")
    if not 1 <= int(number) <= 65535:
        raise ValueError(f"{where}: port {number} is not between 1 and 65535")
    return int(number), protocol


def parse_egress(raw: object) -> tuple[EgressRule, ...]:
    """The ``ui_egress`` setting: a list of ``{cidr, except?, ports?}``; ValueError says why not."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("ui_egress must be a list of {cidr, except, ports} entries")
    rules: list[EgressRule] = []
    for i, entry in enumerate(raw):
        where = f"ui_egress[{i}]"
        if not isinstance(entry, Mapping) or not set(entry) <= {"cidr", "except", "ports"}:
            raise ValueError(f"{where} must be a mapping of cidr, and optionally except and ports")
        rules.append(_rule(entry, where))
    return tuple(rules)


def _rule(entry: Mapping[str, Any], where: str) -> EgressRule:
    try:
        net = ipaddress.ip_network(str(entry.get("cidr")), strict=True)
    except ValueError as exc:
        raise ValueError(f"{where}.cidr: {exc}") from None
    excepted: list[str] = []
    for text in entry.get("except") or []:
        try:
            sub = ipaddress.ip_network(str(text), strict=True)
        except ValueError as exc:
            raise ValueError(f"{where}.except: {exc}") from None
        if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
            raise ValueError(f"{where}.except: {sub} is not inside {net}")
        excepted.append(str(sub))
    ports = entry.get("ports") or []
    if not isinstance(ports, list):
        raise ValueError(f"{where}.ports must be a list (443, or 53/UDP)")
    return EgressRule(str(net), tuple(excepted), tuple(_port(p, f"{where}.ports") for p in ports))


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def ui_namespace(agent_namespace: str, ui_namespace: str | None) -> str:
    """Where the UIs' objects go (issue 17, least privilege): the ``ui_namespace`` setting, or
    the agent's own ``namespace`` when unset (the single-namespace layout). In a namespace of
    their own, the agent's Role there grants exactly the deployer's calls and its own namespace
    needs no Secret access at all (only its Lease). ValueError (one line) for a name the API
    server would refuse."""
    chosen = ui_namespace if ui_namespace not in (None, "") else agent_namespace
    for name, value in (("namespace", agent_namespace), ("ui_namespace", chosen)):
        if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"{name} {value!r} is not a Kubernetes namespace name (a DNS label: lowercase"
                " letters, digits and '-', at most 63)"
            )
    return chosen


@dataclass(frozen=True)
class KubeSettings:
    # Where every object of a UI lives (the root Deployment and all it owns: owner references
    # never cross namespaces). The agent's own namespace, with its Lease, may differ: see
    # ``ui_namespace``.
    namespace: str
    image: str = "idds-vis-ui:0.1.0"
    public_host: str = "vis.example.org"
    scheme: Literal["http", "https"] = "https"
    exposure: Literal["ingress", "route"] = "ingress"
    ingress_class: str | None = "nginx"
    tls_secret: str | None = None
    # Issue 17: the web app's public base URL. With it, each UI's Ingress asks the web app's
    # /auth/check before serving (nginx forward-auth) and sends a browser with no session to
    # sign in there; it must share public_host, so the session cookie reaches both.
    web_url: str | None = None
    # The agent's own namespace (its Lease, the web app's pods), when the UIs have their own
    # (``namespace``); None: the same. With web_url set, the UI's NetworkPolicy admits the
    # pods labelled agent_pod_labels there: the agent probes each UI through its Service (the
    # public URL asks for a sign-in), and on OpenShift the web app proxies /vis/ to it.
    agent_namespace: str | None = None
    agent_pod_labels: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "idds-vis-agent"}
    )
    # Pods of the ingress controller (or the OpenShift router) are the only callers admitted.
    ingress_namespace_labels: dict[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "ingress-nginx"}
    )
    # Where the pod may connect, besides cluster DNS: the artefact servers its serve-ui stages
    # from (BigPanDA, S3, Rucio and its storage). Nothing by default.
    egress: tuple[EgressRule, ...] = ()
    # A source a broker message named is staged in the pod under the address guard; these
    # (the agent's allow_private_addresses) are the internal addresses it may still reach.
    allow_private_addresses: tuple[str, ...] = ()
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
