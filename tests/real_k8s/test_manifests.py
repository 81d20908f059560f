"""conf/ (kustomize) against the real API server of a fresh cluster: the schemas, defaulting and
admission of kube-apiserver itself, not a copy of them."""

from __future__ import annotations

import json

from tests.real_k8s.conftest import CONF
from tests.real_k8s.control_plane import ControlPlane

NS = "idds-vis"  # conf/kustomization.yaml's namespace; nothing else in these tests uses it


def test_conf_applies_on_a_fresh_cluster(k8s: ControlPlane) -> None:
    assert k8s.kubectl("get", "namespace", NS, check=False).returncode != 0, "not fresh"
    # A server-side dry run of the whole kustomization: every object through the real
    # validation and admission. On a fresh cluster the Namespace is not persisted by a dry
    # run, so the namespaced objects can only be refused for that one reason.
    dry = k8s.kubectl("apply", "--dry-run=server", "-k", str(CONF), check=False)
    assert "namespace/idds-vis created (server dry run)" in dry.stdout, dry.stderr
    refusals = [line for line in dry.stderr.splitlines() if line.strip()]
    assert all(f'namespaces "{NS}" not found' in line for line in refusals), refusals

    k8s.kubectl("apply", "-k", str(CONF))  # the Namespace first, then what lives in it
    again = k8s.kubectl("apply", "--dry-run=server", "-k", str(CONF))
    assert "(server dry run)" in again.stdout

    # The agent's pod passes admission (its ServiceAccount, security context) and the
    # scheduler finds room for its requests on the fake Node.
    agent = "app.kubernetes.io/name=idds-vis-agent"
    replicas = "--for=jsonpath={.status.replicas}=1"
    k8s.kubectl("wait", "-n", NS, "deployment/idds-vis-agent", replicas, "--timeout=60s")
    k8s.kubectl("wait", "-n", NS, "pod", "-l", agent, "--for=condition=PodScheduled",
                "--timeout=60s")  # fmt: skip
    pods = json.loads(k8s.kubectl("get", "-n", NS, "pod", "-l", agent, "-o", "json").stdout)
    (pod,) = pods["items"]
    assert pod["spec"]["serviceAccountName"] == "idds-vis-agent"
    # What the agent may do, as the API server's own authorizer answers it.
    sa = f"system:serviceaccount:{NS}:idds-vis-agent"
    allowed = [("create", "deployments.apps"), ("delete", "deployments.apps"),
               ("update", "deployments.apps", "--subresource=finalizers"),
               ("update", "leases.coordination.k8s.io")]  # fmt: skip
    for verb, what, *more in allowed:
        yes = k8s.kubectl("auth", "can-i", verb, what, *more, "-n", NS, "--as", sa, check=False)
        assert yes.stdout.strip() == "yes", (verb, what, more)
    for verb, what, where in (("list", "nodes", NS), ("create", "pods", NS),
                              ("get", "secrets", "default")):  # fmt: skip
        no = k8s.kubectl("auth", "can-i", verb, what, "-n", where, "--as", sa, check=False)
        assert no.stdout.strip() == "no", (verb, what, where)
