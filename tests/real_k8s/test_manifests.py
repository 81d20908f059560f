"""conf/ (kustomize) against the real API server of a fresh cluster: the schemas, defaulting and
admission of kube-apiserver itself, not a copy of them; and what conf/'s RBAC lets the agent do,
as the API server's own authorizer answers (issue 17: least privilege in two namespaces)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from tests.real_k8s.conftest import CONF, CONF_AGENT_NS, CONF_UI_NS, SA
from tests.real_k8s.control_plane import ControlPlane
from tests.real_k8s.stand_ins import admin_api

NS, UI_NS = CONF_AGENT_NS, CONF_UI_NS  # conf's namespaces; nothing else in these tests uses them
AGENT = f"system:serviceaccount:{NS}:{SA}"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# (group, resource, subresource): what the agent might ever be asked about, and then some.
RESOURCES = (
    ("apps", "deployments", ""), ("apps", "deployments", "finalizers"),
    ("apps", "replicasets", ""), ("apps", "statefulsets", ""), ("", "pods", ""),
    ("", "pods", "exec"), ("", "pods", "log"), ("", "events", ""), ("", "services", ""),
    ("", "secrets", ""), ("", "configmaps", ""), ("", "serviceaccounts", ""),
    ("", "serviceaccounts", "token"), ("", "persistentvolumeclaims", ""),
    ("networking.k8s.io", "ingresses", ""), ("networking.k8s.io", "networkpolicies", ""),
    ("route.openshift.io", "routes", ""), ("route.openshift.io", "routes", "custom-host"),
    ("coordination.k8s.io", "leases", ""), ("rbac.authorization.k8s.io", "roles", ""),
    ("rbac.authorization.k8s.io", "rolebindings", ""),
)  # fmt: skip
# system:basic-user and system:discovery, which every authenticated user has.
EVERYONE = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}


def test_conf_applies_on_a_fresh_cluster(k8s: ControlPlane) -> None:
    for ns in (NS, UI_NS):
        assert k8s.kubectl("get", "namespace", ns, check=False).returncode != 0, "not fresh"
    # A server-side dry run of the whole kustomization: every object through the real
    # validation and admission. On a fresh cluster the Namespaces are not persisted by a dry
    # run, so the namespaced objects can only be refused for that one reason.
    dry = k8s.kubectl("apply", "--dry-run=server", "-k", str(CONF), check=False)
    for ns in (NS, UI_NS):
        assert f"namespace/{ns} created (server dry run)" in dry.stdout, dry.stderr
    refusals = [line for line in dry.stderr.splitlines() if line.strip()]
    missing = (f'namespaces "{NS}" not found', f'namespaces "{UI_NS}" not found')
    assert all(any(m in line for m in missing) for line in refusals), refusals

    k8s.kubectl("apply", "-k", str(CONF))  # the Namespaces first, then what lives in them
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
    assert pod["spec"]["serviceAccountName"] == SA
    # What the agent may do, as kubectl asks the API server's authorizer (impersonating it).
    allowed = [("create", "deployments.apps", UI_NS), ("delete", "deployments.apps", UI_NS),
               ("update", "deployments.apps", UI_NS, "--subresource=finalizers"),
               ("update", "leases.coordination.k8s.io", NS)]  # fmt: skip
    for verb, what, where, *more in allowed:
        yes = k8s.kubectl("auth", "can-i", verb, what, *more, "-n", where, "--as", AGENT,
                          check=False)  # fmt: skip
        assert yes.stdout.strip() == "yes", (verb, what, where, more)
    for verb, what, where in (("list", "nodes", NS), ("create", "pods", UI_NS),
                              ("get", "secrets", NS), ("list", "secrets", NS),
                              ("get", "secrets", "default")):  # fmt: skip
        no = k8s.kubectl("auth", "can-i", verb, what, "-n", where, "--as", AGENT, check=False)
        assert no.stdout.strip() == "no", (verb, what, where)


def conf_grants() -> dict[str, set[tuple[str, str, str, str]]]:
    """(group, resource, subresource, verb) conf/role.yaml grants, by namespace."""
    found: dict[str, set[tuple[str, str, str, str]]] = {NS: set(), UI_NS: set()}
    for role in yaml.safe_load_all((CONF / "role.yaml").read_text()):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    plural, _, sub = res.partition("/")
                    found[role["metadata"]["namespace"]] |= {
                        (group, plural, sub, verb) for verb in rule["verbs"]
                    }
    return found


async def _allowed(auth: client.AuthorizationV1Api, ns: str | None,
                   group: str, resource: str, sub: str, verb: str) -> bool:  # fmt: skip
    attrs: dict[str, Any] = {"group": group, "resource": resource, "verb": verb}
    if sub:
        attrs["subresource"] = sub
    if ns is not None:
        attrs["namespace"] = ns
    body: Any = (  # the API takes the plain JSON too
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": AGENT, "groups": ["system:serviceaccounts",
                                            f"system:serviceaccounts:{NS}",
                                            "system:authenticated"],
                  "resourceAttributes": attrs}})  # fmt: skip
    review = await auth.create_subject_access_review(body)
    return bool(review.status.allowed)


async def test_the_agent_may_do_exactly_the_deployers_calls_and_no_more(
    k8s: ControlPlane, tmp_path: Path
) -> None:
    """As the real authorizer answers for conf/'s ServiceAccount: in the agent's namespace only
    its Lease (no Secret at all), in the UIs' namespace exactly role.yaml's calls (every verb of
    every resource nearby asked), nothing in any other namespace or cluster-wide."""
    k8s.kubectl("apply", "-k", str(CONF))  # idempotent: the fresh-cluster test may have run
    grants = conf_grants()
    assert not any(res == "secrets" for _g, res, _s, _v in grants[NS])
    api = await admin_api(k8s.admin_kubeconfig)
    try:
        auth = client.AuthorizationV1Api(api)
        wrong: list[str] = []
        for ns in (NS, UI_NS, "default", None):
            for group, res, sub, verb in ((*r, v) for r in RESOURCES for v in VERBS):
                expected = (group, res, sub, verb) in grants.get(ns or "", set())
                if await _allowed(auth, ns, group, res, sub, verb) != expected:
                    wrong.append(f"{verb} {group}/{res}{'/' + sub if sub else ''} in {ns}")
        for verb, res in (("list", "namespaces"), ("list", "nodes"), ("create", "clusterroles")):
            if await _allowed(auth, None, "", res, "", verb):
                wrong.append(f"{verb} {res} cluster-wide")
        assert wrong == [], "the authorizer's answer differs from conf/role.yaml"
    finally:
        await api.close()

    # The same, as the ServiceAccount itself sees it (SelfSubjectRulesReview with its token):
    # nothing beyond what role.yaml names, in either namespace.
    token = k8s.kubectl("create", "token", SA, "-n", NS, "--duration=10m").stdout.strip()
    sa_api = await admin_api(k8s.token_kubeconfig(tmp_path / "sa.kubeconfig", NS, token))
    try:
        auth = client.AuthorizationV1Api(sa_api)
        for ns in (NS, UI_NS, "default"):
            body: Any = {"apiVersion": "authorization.k8s.io/v1",
                         "kind": "SelfSubjectRulesReview", "spec": {"namespace": ns}}  # fmt: skip
            review = await auth.create_self_subject_rules_review(body)
            seen = set()
            for rule in review.status.resource_rules:
                for group in rule.api_groups or [""]:
                    for res in rule.resources or []:
                        plural, _, sub = res.partition("/")
                        if plural not in EVERYONE:
                            seen |= {(group, plural, sub, verb) for verb in rule.verbs}
            assert seen == grants.get(ns, set()), ns
    finally:
        await sa_api.close()
