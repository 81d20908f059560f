"""The UI's Kubernetes objects against the real OpenAPI schemas, strict (no cluster needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import kubernetes_validate
import pytest

from idds_vis.deploy.kubernetes import objects, reasons
from idds_vis.deploy.kubernetes.settings import KubeSettings, parse_egress
from idds_vis.domain.models import Instance, InstanceKey
from idds_vis.domain.naming import is_dns1123_label
from idds_vis.domain.phases import Phase

K8S = "1.33"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def instance(task_id: str = "user.jdoe/HPO scan #7") -> Instance:
    key = InstanceKey(task_id)
    return Instance(task_id=task_id, tool="mlflow", name=key.name, phase=Phase.DEPLOYING,
                    source="https://bigpanda.example/idds/downloadhpometrics/?workloadid=7",
                    ttl=timedelta(hours=24), created_at=NOW, updated_at=NOW)  # fmt: skip


def owned(inst: Instance, ks: KubeSettings) -> tuple[dict, list[dict]]:
    root = objects.deployment(inst, ks, inst.source or "", NOW + timedelta(hours=24), secret=True)
    root["metadata"]["uid"] = "8d3e9f0a-0000-4000-8000-000000000001"
    return root, objects.dependents(inst, ks, root, {"AWS_SECRET_ACCESS_KEY": "s3cr3t"})


@pytest.mark.parametrize("exposure", ["ingress", "route"])
def test_every_object_is_valid_for_the_api_server(exposure: str) -> None:
    ks = KubeSettings(namespace="vis", exposure=exposure, tls_secret="vis-tls")  # type: ignore[arg-type]
    root, deps = owned(instance(), ks)
    for obj in [root, *deps]:
        if obj["kind"] == "Route":  # no upstream schema for OpenShift's Route
            continue
        kubernetes_validate.validate(obj, K8S, strict=True)
        assert is_dns1123_label(obj["metadata"]["name"])
    kinds = [o["kind"] for o in deps]
    assert kinds == ["Secret", "Service", exposure.capitalize(), "NetworkPolicy"]


def test_the_validator_is_strict_enough_to_catch_a_mistake() -> None:
    root, _ = owned(instance(), KubeSettings(namespace="vis"))
    root["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(root, K8S, strict=True)


def test_labels_annotations_owner_and_pod_hardening() -> None:
    inst = instance()
    root, deps = owned(inst, KubeSettings(namespace="vis"))
    labels = root["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "idds-vis"
    assert labels["app.kubernetes.io/instance"] == inst.name
    assert labels["idds-vis/task-id"] == "user.jdoe_HPO_scan_7"
    notes = root["metadata"]["annotations"]
    assert notes["idds-vis/task-id"] == "user.jdoe/HPO scan #7"
    assert notes["idds-vis/expires-at"] == notes["janitor/expires"] == "2026-11-22T12:00:00+00:00"
    assert notes["idds-vis/public-url"] == f"https://vis.example.org{inst.prefix}/"
    for dep in deps:
        (ref,) = dep["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("Deployment", inst.name, True)
    pod = root["spec"]["template"]["spec"]
    (ui,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ui["securityContext"]["readOnlyRootFilesystem"] is True
    assert ui["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ui["startupProbe"]["httpGet"]["path"] == f"{inst.prefix}/health"
    assert {m["mountPath"] for m in ui["volumeMounts"]} == {"/tmp", "/data"}
    assert ui["resources"]["limits"]["memory"] and ui["resources"]["requests"]["cpu"]
    assert "s3cr3t" not in str(root)  # credentials only in the Secret


@pytest.mark.parametrize("task_id", ["1", "A" * 300, "---", "ünïcode/ids"])
def test_odd_task_ids_still_give_valid_labels(task_id: str) -> None:
    root, _ = owned(instance(task_id), KubeSettings(namespace="vis"))
    kubernetes_validate.validate(root, K8S, strict=True)


def test_the_source_is_only_referenced_by_the_pod_and_held_by_the_secret() -> None:
    inst = instance()
    source = "https://u:hunter22@bigpanda.example/x.tgz?sig=0a1b2c3d4e"
    inst = Instance(**{**inst.__dict__, "source": source})
    ks = KubeSettings(namespace="vis")
    root = objects.deployment(inst, ks, source, None, secret=False)
    root["metadata"]["uid"] = "8d3e9f0a-0000-4000-8000-000000000001"
    (ui,) = root["spec"]["template"]["spec"]["containers"]
    assert ui["args"][ui["args"].index("--source") + 1] == "$(IDDS_VIS_SOURCE)"
    assert {"name": "IDDS_VIS_SOURCE", "valueFrom": {"secretKeyRef": {
        "name": inst.name, "key": "IDDS_VIS_SOURCE"}}} in ui["env"]  # fmt: skip
    assert "hunter22" not in str(root) and "0a1b2c3d4e" not in str(root)
    shown = root["metadata"]["annotations"]["idds-vis/source"]
    assert shown == "https://bigpanda.example/x.tgz?sig=***"
    secret, *rest = objects.dependents(inst, ks, root, None)
    assert secret["kind"] == "Secret" and secret["stringData"] == {"IDDS_VIS_SOURCE": source}
    assert all("hunter22" not in str(obj) for obj in rest)


def test_the_egress_policy_is_valid_for_the_api_server() -> None:
    egress = parse_egress([{"cidr": "192.0.2.0/24", "except": ["192.0.2.0/25"],
                            "ports": [443, "53/UDP"]}, {"cidr": "2001:db8::/32"}])  # fmt: skip
    _root, deps = owned(instance(), KubeSettings(namespace="vis", egress=egress))
    (policy,) = [d for d in deps if d["kind"] == "NetworkPolicy"]
    kubernetes_validate.validate(policy, K8S, strict=True)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert len(policy["spec"]["egress"]) == 3  # DNS, then the two listed


def test_what_may_pass_by_itself_is_pending_not_failed() -> None:
    """The pod may start before its Secret is created (the kubelet retries), and may wait for
    a node an autoscaler adds: neither is a failure; a missing key in the Secret is."""

    def pod(message: str, node: str | None = "n1") -> dict:
        waiting = {"reason": "CreateContainerConfigError", "message": message}
        spec = {"nodeName": node} if node else {}
        return {"spec": spec, "status": {"containerStatuses": [{"state": {"waiting": waiting}}]}}

    early = pod('secret "mlflow-1-abc" not found')
    assert reasons.pending_reason(early, []) == (
        'the UI waits for its Secret (secret "mlflow-1-abc" not found)'
    )
    assert reasons.pod_failure(early) is None
    wrong = pod("couldn't find key IDDS_VIS_SOURCE in Secret vis/mlflow-1-abc")
    assert reasons.pending_reason(wrong, []) is None
    assert (reasons.pod_failure(wrong) or "").startswith("the UI container is misconfigured")
    no_node = {"spec": {}, "status": {}}
    said = "0/3 nodes are available: 3 Insufficient cpu."
    busy = [{"reason": "FailedScheduling", "message": said}]
    assert reasons.pending_reason(no_node, busy) == (
        "no node can run the UI: 0/3 nodes are available: 3 Insufficient cpu."
    )
    assert reasons.event_failure(busy) is None
    assert reasons.pending_reason({"spec": {"nodeName": "n1"}, "status": {}}, busy) is None
