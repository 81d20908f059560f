"""The Kubernetes API emulator, driven through kubernetes-asyncio and a generated kubeconfig."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s_emulator import Behaviour, KubeEmulator, validation
from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.selectors import parse_label_selector

NS = "vis"
WATCH_LIMIT = 30  # an upper bound so a broken emulator fails the test instead of hanging it


@pytest.fixture
async def emu() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator
        assert emulator.controller.errors == []


@pytest.fixture
async def api(emu: KubeEmulator, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    path = emu.write_kubeconfig(tmp_path / "kubeconfig", NS)
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


def deployment(name: str = "ui", image: str = "mlflow-ui:1", **labels: str) -> dict[str, Any]:
    pod_labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": pod_labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [
                        {"name": "ui", "image": image, "ports": [{"containerPort": 5000}]}
                    ]
                },
            },
        },
    }


def config_map(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {"k": "v"},
    }


def owned_by(owner: Any) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": owner.metadata.name,
            "uid": owner.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


async def watch_until(
    list_fn: Callable[..., Any], *args: Any, until: Callable[[dict[str, Any]], bool], **kwargs: Any
) -> list[dict[str, Any]]:
    """Raw events of a watch up to and including the first one `until` accepts."""
    seen: list[dict[str, Any]] = []
    async with watch.Watch() as w:
        async for event in w.stream(list_fn, *args, timeout_seconds=WATCH_LIMIT, **kwargs):
            seen.append({"type": event["type"], "object": event["raw_object"]})
            if until(seen[-1]):
                return seen
    raise AssertionError(f"watch ended without the awaited event; saw {seen}")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


async def test_create_get_and_list_with_label_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    specs = {
        "a": {"app": "ui", "tier": "web", "env": "prod"},
        "b": {"app": "ui", "tier": "db"},
        "c": {"app": "other", "x": "1"},
    }
    for name, labels in specs.items():
        created = await core.create_namespaced_config_map(NS, config_map(name, labels))
        assert created.metadata.uid and created.metadata.creation_timestamp
        assert created.metadata.namespace == NS
    got = await core.read_namespaced_config_map("a", NS)
    assert got.data == {"k": "v"}

    async def names(selector: str) -> list[str]:
        listed = await core.list_namespaced_config_map(NS, label_selector=selector)
        return [item.metadata.name for item in listed.items]

    assert await names("app=ui") == ["a", "b"]
    assert await names("app==ui,tier=db") == ["b"]
    assert await names("env!=prod") == ["b", "c"]
    assert await names("tier in (web, db)") == ["a", "b"]
    assert await names("tier notin (web)") == ["b", "c"]
    assert await names("x") == ["c"]
    assert await names("!x") == ["a", "b"]
    assert await names("") == ["a", "b", "c"]
    with pytest.raises(ApiException) as bad:
        await names("app in (ui")
    assert bad.value.status == 400


async def test_resource_versions_increase_and_stale_update_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(NS, config_map("cm"))
    stale_rv = created.metadata.resource_version
    created.data = {"k": "v2"}
    updated = await core.replace_namespaced_config_map("cm", NS, created)
    assert int(updated.metadata.resource_version) > int(stale_rv)
    assert updated.data == {"k": "v2"}
    created.data = {"k": "v3"}  # still carries the stale resourceVersion
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("cm", NS, created)
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "Conflict"
    # A no-op update is not a change: same resourceVersion, no event.
    same = await core.replace_namespaced_config_map("cm", NS, updated)
    assert same.metadata.resource_version == updated.metadata.resource_version


async def test_patch_kinds(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment(NS, deployment())
    # A dict body goes as a strategic merge patch: containers merge by name, ports survive.
    patched = await apps.patch_namespaced_deployment(
        "ui",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "ui", "image": "mlflow-ui:2"}]}}}},
    )
    container = patched.spec.template.spec.containers[0]
    assert (container.image, container.ports[0].container_port) == ("mlflow-ui:2", 5000)
    assert patched.metadata.generation == 2
    merged = await apps.patch_namespaced_deployment(
        "ui",
        NS,
        {"metadata": {"labels": {"extra": "yes"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels["extra"] == "yes"
    assert merged.metadata.generation == 2  # metadata changes do not bump generation
    jsonpatched = await apps.patch_namespaced_deployment(
        "ui", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    )
    assert jsonpatched.spec.replicas == 2
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("ui", NS, {"metadata": {"resourceVersion": "1"}})
    assert err.value.status == 409


async def test_missing_objects_are_404(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    calls = [
        core.read_namespaced_service("nope", NS),
        core.delete_namespaced_service("nope", NS),
        core.replace_namespaced_config_map("nope", NS, config_map("nope")),
        core.patch_namespaced_secret("nope", NS, {"data": {}}),
    ]
    for call in calls:
        with pytest.raises(ApiException) as err:
            await call
        assert err.value.status == 404
        body = status_of(err.value)
        assert (body["kind"], body["status"], body["reason"]) == ("Status", "Failure", "NotFound")
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map("no-such-namespace", config_map("x"))
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "no-such-namespace" not found'


async def test_duplicate_create_is_409_already_exists(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, deployment())
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "ui", "group": "apps", "kind": "deployments"}


async def test_bad_names_are_422(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, deployment("Bad_Name"))
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["details"]["kind"] == "Deployment"
    assert any(c["field"] == "metadata.name" for c in body["details"]["causes"])
    # Services need an RFC 1035 label; a leading digit is fine for a ConfigMap.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "1ui"},
        "spec": {"ports": [{"port": 80}]},
    }
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_service(NS, service)
    assert err.value.status == 422
    await core.create_namespaced_config_map(NS, config_map("1ui"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map(NS, config_map("a.b.c-" + "x" * 250))
    assert err.value.status == 422


async def test_schema_violations(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    bad_type = deployment()
    bad_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, bad_type)
    # kube-apiserver fails JSON decoding of a mistyped field with 400, not 422.
    assert err.value.status == 400
    assert (
        "cannot unmarshal string into Go struct field ContainerPort.spec.template.spec."
        "containers.ports.containerPort of type int32" in status_of(err.value)["message"]
    )

    unknown = deployment()
    unknown["spec"]["replicaCount"] = 1
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, unknown)
    assert err.value.status == 400
    assert 'unknown field "spec.replicaCount"' in status_of(err.value)["message"]
    # fieldValidation=Warn is what a real server does by default: drop the field, warn.
    accepted = await apps.create_namespaced_deployment(NS, unknown, field_validation="Warn")
    assert accepted.spec.replicas == 1

    invalid = deployment()
    pod_spec = invalid["spec"]["template"]["spec"]
    pod_spec["containers"][0]["ports"][0]["containerPort"] = 70000
    del pod_spec["containers"][0]["image"]
    invalid["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    del invalid["spec"]["selector"]["matchLabels"]
    invalid["spec"]["selector"]["matchLabels"] = {"app": "ui"}
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, invalid)
    assert err.value.status == 422
    fields = {c["field"] for c in status_of(err.value)["details"]["causes"]}
    assert fields == {
        "spec.template.spec.containers[0].ports[0].containerPort",
        "spec.template.spec.containers[0].image",
        "spec.template.metadata.labels",
    }
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_secret(NS, {"apiVersion": "v1", "kind": "Secret",
                                                 "metadata": {"name": "s"},
                                                 "data": {"token": "not base64!"}})  # fmt: skip
    assert err.value.status == 400


async def test_immutable_selector_and_resource_version_on_create(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = await apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment(
            "ui", NS, {"spec": {"selector": {"matchLabels": {"app": "ui", "v": "2"}}}}
        )
    assert err.value.status == 422
    copy_with_rv = deployment("ui2")
    copy_with_rv["metadata"]["resourceVersion"] = created.metadata.resource_version
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment(NS, copy_with_rv)
    assert err.value.status == 500


async def test_watch_sees_pod_added_then_becoming_ready(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    start = (await core.list_namespaced_pod(NS)).metadata.resource_version
    await apps.create_namespaced_deployment(NS, deployment())
    events = await watch_until(
        core.list_namespaced_pod,
        NS,
        label_selector="app=ui",
        resource_version=start,
        until=lambda e: is_ready(e["object"]),
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert not is_ready(events[0]["object"])
    pod = events[-1]["object"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)
    dep = await watch_until(
        apps.list_namespaced_deployment,
        NS,
        resource_version=start,
        until=lambda e: e["object"]["status"].get("readyReplicas") == 1,
    )
    status = dep[-1]["object"]["status"]
    assert status["availableReplicas"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Available": "True",
        "Progressing": "True",
    }


async def test_watch_with_expired_resource_version_gets_410(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    old = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    await core.create_namespaced_config_map(NS, config_map("cm"))
    emu.expire_resource_versions()
    with pytest.raises(ApiException) as err:
        async with watch.Watch() as w:
            async for _ in w.stream(
                core.list_namespaced_config_map,
                NS,
                resource_version=old,
                timeout_seconds=WATCH_LIMIT,
            ):
                pass
    assert err.value.status == 410
    assert "Expired" in str(err.value.reason)
    # A fresh list gives a resourceVersion that watches from again.
    fresh = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    await core.create_namespaced_config_map(NS, config_map("cm2"))
    seen = await watch_until(
        core.list_namespaced_config_map, NS, resource_version=fresh, until=lambda e: True
    )
    assert seen[0]["object"]["metadata"]["name"] == "cm2"


async def test_watch_timeout_and_selector_transitions(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    await core.create_namespaced_config_map(NS, config_map("cm", {"role": "x"}))
    await core.patch_namespaced_config_map("cm", NS, {"metadata": {"labels": {"role": "y"}}})
    await core.patch_namespaced_config_map("cm", NS, {"metadata": {"labels": {"role": "x"}}})
    await core.delete_namespaced_config_map("cm", NS)
    seen = []
    async with watch.Watch() as w:
        async for e in w.stream(
            core.list_namespaced_config_map,
            NS,
            label_selector="role=x",
            resource_version=start,
            timeout_seconds=1,
        ):
            seen.append(e["type"])
    # Leaving the selector reads as DELETED, coming back as ADDED, as the watch cache does.
    assert seen == ["ADDED", "DELETED", "ADDED", "DELETED"]


async def test_background_deletion_collects_dependents(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    net = client.NetworkingV1Api(api)
    owner = await apps.create_namespaced_deployment(NS, deployment())
    refs = owned_by(owner)
    await core.create_namespaced_service(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ui", "ownerReferences": refs},
            "spec": {"selector": {"app": "ui"}, "ports": [{"port": 80, "targetPort": 5000}]},
        },
    )
    await core.create_namespaced_secret(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ui", "ownerReferences": refs},
            "stringData": {"token": "t"},
        },
    )
    await net.create_namespaced_ingress(
        NS,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "ui", "ownerReferences": refs},
            "spec": {
                "rules": [
                    {
                        "host": "ui.example.org",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "ui", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )
    await net.create_namespaced_network_policy(
        NS,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "ui", "ownerReferences": refs},
            "spec": {"podSelector": {"matchLabels": {"app": "ui"}}},
        },
    )
    await core.create_namespaced_config_map(NS, config_map("unowned"))
    await watch_until(
        core.list_namespaced_pod, NS, resource_version="0", until=lambda e: is_ready(e["object"])
    )
    start = (await core.list_namespaced_service(NS)).metadata.resource_version

    await apps.delete_namespaced_deployment("ui", NS, propagation_policy="Background")
    for list_fn in (
        core.list_namespaced_service,
        core.list_namespaced_secret,
        net.list_namespaced_ingress,
        net.list_namespaced_network_policy,
        core.list_namespaced_pod,
    ):
        await watch_until(
            list_fn, NS, resource_version=start, until=lambda e: e["type"] == "DELETED"
        )
        assert (await list_fn(NS)).items == []
    assert [c.metadata.name for c in (await core.list_namespaced_config_map(NS)).items] == [
        "unowned"
    ]


async def test_orphan_and_foreground_deletion(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    owner = await apps.create_namespaced_deployment(NS, deployment("a"))
    await core.create_namespaced_config_map(
        NS, {**config_map("kept"), "metadata": {"name": "kept", "ownerReferences": owned_by(owner)}}
    )
    await apps.delete_namespaced_deployment("a", NS, propagation_policy="Orphan")
    kept = await core.read_namespaced_config_map("kept", NS)
    assert kept.metadata.owner_references is None

    owner = await apps.create_namespaced_deployment(NS, deployment("b"))
    await core.create_namespaced_config_map(
        NS, {**config_map("dep"), "metadata": {"name": "dep", "ownerReferences": owned_by(owner)}}
    )
    start = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    await apps.delete_namespaced_deployment(
        "b", NS, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    events = await watch_until(
        apps.list_namespaced_deployment,
        NS,
        resource_version=start,
        until=lambda e: e["type"] == "DELETED",
    )
    assert events[0]["object"]["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in events[0]["object"]["metadata"]["finalizers"]
    # The dependent was gone before its owner.
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("dep", NS)
    assert err.value.status == 404


async def test_finalizers_hold_deletion(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(
        NS, {**config_map("held"), "metadata": {"name": "held", "finalizers": ["example.org/hold"]}}
    )
    await core.delete_namespaced_config_map("held", NS)
    held = await core.read_namespaced_config_map("held", NS)
    assert held.metadata.deletion_timestamp is not None
    await core.patch_namespaced_config_map(
        "held", NS, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("held", NS)
    assert err.value.status == 404


EXPECTED = {
    Behaviour.IMAGE_PULL_BACKOFF: "Failed",
    Behaviour.UNSCHEDULABLE: "FailedScheduling",
    Behaviour.OOM: "BackOff",
    Behaviour.CRASH: "BackOff",
    Behaviour.NEVER_READY: "Unhealthy",
}


@pytest.mark.parametrize("behaviour", list(EXPECTED))
async def test_pod_behaviours_emit_matching_events(
    emu: KubeEmulator, api: client.ApiClient, behaviour: Behaviour
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    emu.set_behaviour(behaviour, selector="instance=failing")
    start = (await core.list_namespaced_event(NS)).metadata.resource_version
    await apps.create_namespaced_deployment(NS, deployment(instance="failing"))
    events = await watch_until(
        core.list_namespaced_event,
        NS,
        resource_version=start,
        field_selector="involvedObject.kind=Pod",
        until=lambda e: e["object"]["reason"] == EXPECTED[behaviour],
    )
    event = events[-1]["object"]
    pod = await core.read_namespaced_pod(event["involvedObject"]["name"], NS)
    assert event["involvedObject"]["uid"] == pod.metadata.uid
    assert event["type"] == "Warning" or behaviour == Behaviour.IMAGE_PULL_BACKOFF
    ready = [c for c in pod.status.conditions if c.type in ("Ready", "PodScheduled")]
    assert any(c.status == "False" for c in ready)
    if behaviour == Behaviour.IMAGE_PULL_BACKOFF:
        assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    elif behaviour == Behaviour.UNSCHEDULABLE:
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert scheduled.reason == "Unschedulable"
    elif behaviour in (Behaviour.OOM, Behaviour.CRASH):
        status = pod.status.container_statuses[0]
        assert status.state.waiting.reason == "CrashLoopBackOff"
        expected = "OOMKilled" if behaviour == Behaviour.OOM else "Error"
        assert status.last_state.terminated.reason == expected
    dep = await apps.read_namespaced_deployment("ui", NS)
    available = next(c for c in dep.status.conditions if c.type == "Available")
    assert available.status == "False"


async def test_quota_exceeded_blocks_pods_until_lifted(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    emu.quota_exceeded = True
    start = (await core.list_namespaced_event(NS)).metadata.resource_version
    await apps.create_namespaced_deployment(NS, deployment())
    failed = await watch_until(
        core.list_namespaced_event,
        NS,
        resource_version=start,
        until=lambda e: e["object"]["reason"] == "FailedCreate",
    )
    assert "exceeded quota" in failed[-1]["object"]["message"]
    dep = await apps.read_namespaced_deployment("ui", NS)
    failure = next(c for c in dep.status.conditions if c.type == "ReplicaFailure")
    assert failure.status == "True" and "exceeded quota" in failure.message
    assert (await core.list_namespaced_pod(NS)).items == []

    emu.quota_exceeded = False
    await watch_until(
        apps.list_namespaced_deployment,
        NS,
        resource_version=start,
        until=lambda e: e["object"]["status"].get("readyReplicas") == 1,
    )
    dep = await apps.read_namespaced_deployment("ui", NS)
    assert "ReplicaFailure" not in {c.type for c in dep.status.conditions}


async def test_image_change_rolls_the_pod(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await apps.create_namespaced_deployment(NS, deployment())
    first = await watch_until(
        core.list_namespaced_pod, NS, resource_version="0", until=lambda e: is_ready(e["object"])
    )
    old_pod = first[-1]["object"]["metadata"]
    start = (await core.list_namespaced_pod(NS)).metadata.resource_version
    await apps.patch_namespaced_deployment(
        "ui",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "ui", "image": "mlflow-ui:2"}]}}}},
    )
    events = await watch_until(
        core.list_namespaced_pod, NS, resource_version=start, until=lambda e: e["type"] == "DELETED"
    )
    deleted = events[-1]["object"]["metadata"]
    assert deleted["name"] == old_pod["name"]
    new = [e["object"] for e in events if e["object"]["metadata"]["name"] != old_pod["name"]]
    assert new and is_ready(new[-1])  # the old pod went only once the new one was Ready
    assert new[-1]["spec"]["containers"][0]["image"] == "mlflow-ui:2"
    assert (
        new[-1]["metadata"]["labels"]["pod-template-hash"] != old_pod["labels"]["pod-template-hash"]
    )
    pods = (await core.list_namespaced_pod(NS)).items
    assert [p.metadata.name for p in pods] == [new[-1]["metadata"]["name"]]


async def test_failing_new_image_keeps_the_old_pod(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await apps.create_namespaced_deployment(NS, deployment())
    await watch_until(
        core.list_namespaced_pod, NS, resource_version="0", until=lambda e: is_ready(e["object"])
    )
    emu.set_behaviour("image-pull-backoff", image="mlflow-ui:missing")
    start = (await core.list_namespaced_event(NS)).metadata.resource_version
    await apps.patch_namespaced_deployment(
        "ui",
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "ui", "image": "mlflow-ui:missing"}]}}
            }
        },
    )
    await watch_until(
        core.list_namespaced_event,
        NS,
        resource_version=start,
        until=lambda e: e["object"]["message"] == "Error: ImagePullBackOff",
    )
    pods = (await core.list_namespaced_pod(NS)).items
    assert sorted(is_ready(api.sanitize_for_serialization(p)) for p in pods) == [False, True]


async def test_injected_failures_and_request_counts(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    emu.inject_failure(503, verb="create", resource="deployments", times=2)
    emu.inject_failure(429, verb="get", resource="deployments", retry_after=3)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await apps.create_namespaced_deployment(NS, deployment())
        assert err.value.status == 503
        assert status_of(err.value)["reason"] == "ServiceUnavailable"
    await apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("ui", NS)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "3"
    await apps.read_namespaced_deployment("ui", NS)
    assert emu.request_count("create", "deployments") == 3
    assert emu.request_count("get", "deployments") == 2

    emu.inject_hang(verb="list", resource="deployments")
    with pytest.raises(asyncio.TimeoutError):
        await apps.list_namespaced_deployment(NS, _request_timeout=0.2)
    assert len((await apps.list_namespaced_deployment(NS)).items) == 1


async def test_silenced_watch_stays_open_without_events(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    seen: list[str] = []
    opened = asyncio.Event()

    async def follow() -> None:
        async with watch.Watch() as w:
            async for e in w.stream(
                core.list_namespaced_config_map, NS, timeout_seconds=1, resource_version="0"
            ):
                seen.append(e["raw_object"]["metadata"]["name"])
                if e["raw_object"]["metadata"]["name"] == "marker":
                    opened.set()

    await core.create_namespaced_config_map(NS, config_map("marker"))
    task = asyncio.create_task(follow())
    await opened.wait()
    assert emu.silence_watches("configmaps") == 1
    await core.create_namespaced_config_map(NS, config_map("unseen"))
    await task  # ends only through its own timeoutSeconds
    assert seen == ["marker"]


async def test_discovery_version_and_routes(api: client.ApiClient) -> None:
    assert (await client.VersionApi(api).get_code()).minor == "37"
    assert (await client.CoreApi(api).get_api_versions()).versions == ["v1"]
    groups = {g.name for g in (await client.ApisApi(api).get_api_versions()).groups}
    assert {
        "apps",
        "networking.k8s.io",
        "route.openshift.io",
        "coordination.k8s.io",
        "rbac.authorization.k8s.io",
    } <= groups
    resources = await client.AppsV1Api(api).get_api_resources()
    assert {"deployments", "deployments/status"} <= {r.name for r in resources.resources}
    custom = client.CustomObjectsApi(api)
    route = await custom.create_namespaced_custom_object(
        "route.openshift.io",
        "v1",
        NS,
        "routes",
        {
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": {"name": "ui"},
            "spec": {"to": {"kind": "Service", "name": "ui"}, "port": {"targetPort": "http"}},
        },
    )
    assert route["spec"]["host"] == f"ui-{NS}.apps.emulator.local"
    assert route["status"]["ingress"][0]["conditions"][0]["type"] == "Admitted"
    with pytest.raises(ApiException) as err:
        await custom.create_namespaced_custom_object(
            "route.openshift.io",
            "v1",
            NS,
            "routes",
            {
                "apiVersion": "route.openshift.io/v1",
                "kind": "Route",
                "metadata": {"name": "bad"},
                "spec": {"to": {"kind": "Pod"}},
            },
        )
    assert err.value.status == 422


async def test_leases_rbac_and_pagination(api: client.ApiClient) -> None:
    coord, rbac = client.CoordinationV1Api(api), client.RbacAuthorizationV1Api(api)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = await coord.replace_namespaced_lease("leader", NS, lease)  # PUT may create
    assert created.spec.holder_identity == "a"
    await rbac.create_namespaced_role(
        NS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}],
    }
    await rbac.create_namespaced_role_binding(NS, binding)
    with pytest.raises(ApiException) as err:
        await rbac.patch_namespaced_role_binding("reader", NS, {"roleRef": {"name": "other"}})
    assert err.value.status == 422
    core = client.CoreV1Api(api)
    for i in range(5):
        await core.create_namespaced_config_map(NS, config_map(f"cm{i}"))
    page = await core.list_namespaced_config_map(NS, limit=2)
    names = [i.metadata.name for i in page.items]
    while page.metadata._continue:
        page = await core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
        names += [i.metadata.name for i in page.items]
    assert names == [f"cm{i}" for i in range(5)]
    await core.delete_collection_namespaced_config_map(NS, label_selector="")
    assert (await core.list_namespaced_config_map(NS)).items == []


async def test_requests_need_the_kubeconfig_token(emu: KubeEmulator) -> None:
    cfg = client.Configuration(host=emu.url)
    async with client.ApiClient(cfg) as anonymous:
        with pytest.raises(ApiException) as err:
            await client.CoreV1Api(anonymous).list_namespaced_pod(NS)
        assert err.value.status == 401


def test_label_selector_grammar() -> None:
    sel = parse_label_selector("a in (x, y),b!=z, !c,d,e notin (q),f>3")
    assert sel.matches({"a": "x", "d": "", "f": "4"})
    assert not sel.matches({"a": "x", "d": "", "f": "4", "c": "1"})
    assert not sel.matches({"a": "x", "b": "z", "d": "", "f": "4"})
    assert not sel.matches({"a": "x", "d": "", "f": "2"})
    assert parse_label_selector("a=").matches({"a": ""})
    for bad in ("a in x", "=b", "a,", "a in ()", "a=b c", "A B", "a>b"):
        with pytest.raises(ApiError):
            parse_label_selector(bad)


async def test_seed_loads_settled_objects_that_list_watch_and_collect(
    emu: KubeEmulator, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    decoded: list[str] = []
    real_decode = validation.decode

    def counting_decode(version: str, rt: Any, body: Any, field_validation: str) -> Any:
        decoded.append(rt.kind)
        return real_decode(version, rt, body, field_validation)

    monkeypatch.setattr(validation, "decode", counting_decode)
    start = emu.resource_version
    roots = emu.seed([deployment("ui-0")], NS)
    first_shape = decoded.count("Deployment")
    roots += emu.seed([deployment(f"ui-{i}") for i in range(1, 4)], NS)
    assert first_shape > 0
    assert decoded.count("Deployment") == first_shape  # once per shape, not per object

    def service(owner: dict[str, Any]) -> dict[str, Any]:
        meta = owner["metadata"]
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
               "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": meta["name"], "ownerReferences": [ref]},
            "spec": {"selector": {"app": meta["name"]}, "ports": [{"port": 80}]},
        }

    emu.seed([service(root) for root in roots], NS)

    deps = await apps.list_namespaced_deployment(NS)
    assert [d.metadata.name for d in deps.items] == ["ui-0", "ui-1", "ui-2", "ui-3"]
    assert all(d.status.ready_replicas == 1 and d.metadata.generation == 1 for d in deps.items)
    assert deps.metadata.resource_version == str(emu.resource_version)
    pods = (await core.list_namespaced_pod(NS)).items
    owners = {p.metadata.owner_references[0].uid for p in pods}
    assert owners == {r["metadata"]["uid"] for r in roots} and len(pods) == 4
    assert all(p.spec.node_name and p.metadata.labels["pod-template-hash"] for p in pods)
    assert all(is_ready(core.api_client.sanitize_for_serialization(p)) for p in pods)
    services = (await core.list_namespaced_service(NS)).items
    assert len({s.spec.cluster_ip for s in services}) == 4
    rvs = [int(o.metadata.resource_version) for o in [*deps.items, *pods, *services]]
    assert len(set(rvs)) == len(rvs) and min(rvs) > start

    seen = await watch_until(
        apps.list_namespaced_deployment,
        NS,
        resource_version=str(start),
        until=lambda e: e["object"]["metadata"]["name"] == "ui-3",
    )
    assert [e["type"] for e in seen] == ["ADDED"] * 4

    # The controller had nothing to do for seeded objects: a fresh Deployment queued behind
    # them gets its pod, and the seeded pods are as loaded, with no Events made for them.
    await apps.create_namespaced_deployment(NS, deployment("fresh"))
    await watch_until(
        core.list_namespaced_pod,
        NS,
        label_selector="app=fresh",
        resource_version="0",
        until=lambda e: is_ready(e["object"]),
    )
    again = [p for p in (await core.list_namespaced_pod(NS)).items if p.metadata.name[:2] == "ui"]
    assert [p.metadata.resource_version for p in again] == [
        p.metadata.resource_version for p in pods
    ]
    assert emu.events_for("Deployment", "ui-0", NS) == []
    assert emu.events_for("Deployment", "fresh", NS) != []

    with pytest.raises(ApiError) as bad:  # a new shape is validated in full
        emu.seed([deployment("bad") | {"spec": {"replicas": "one"}}], NS)
    assert bad.value.code == 400
    with pytest.raises(ApiError) as dup:
        emu.seed([deployment("ui-1")], NS)
    assert dup.value.code == 409

    # Garbage collection sees seeded owners and dependents like any others.
    stray = config_map("stray")
    stray["metadata"]["ownerReferences"] = [
        dict(service(roots[0])["metadata"]["ownerReferences"][0], uid="gone")
    ]
    mark = (await core.list_namespaced_service(NS)).metadata.resource_version
    emu.seed([stray], NS)
    await apps.delete_namespaced_deployment("ui-0", NS, propagation_policy="Background")
    for list_fn in (core.list_namespaced_service, core.list_namespaced_config_map):
        await watch_until(
            list_fn, NS, resource_version=mark, until=lambda e: e["type"] == "DELETED"
        )
    assert [s.metadata.name for s in (await core.list_namespaced_service(NS)).items] == [
        "ui-1",
        "ui-2",
        "ui-3",
    ]
    assert (await core.list_namespaced_config_map(NS)).items == []
    assert [p.metadata.labels["app"] for p in (await core.list_namespaced_pod(NS)).items] == [
        "fresh",
        "ui-1",
        "ui-2",
        "ui-3",
    ]


async def test_a_paused_garbage_collector_lags_like_a_stopped_controller_manager(
    emu: KubeEmulator, api: client.ApiClient
) -> None:
    """Background: the owner goes at once, its dependents stay (owner uid gone) until resumed.
    Foreground: the owner stays marked. Either way nothing is collected while paused."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    emu.pause_gc()
    owner = await apps.create_namespaced_deployment(NS, deployment("a"))
    await core.create_namespaced_config_map(
        NS, {**config_map("dep"), "metadata": {"name": "dep", "ownerReferences": owned_by(owner)}}
    )
    await apps.delete_namespaced_deployment("a", NS, propagation_policy="Background")
    assert emu.get("deployments", "a", NS) is None
    left = emu.get("configmaps", "dep", NS)
    assert left is not None and left["metadata"]["ownerReferences"][0]["uid"] == owner.metadata.uid
    # A new owner of the same name is not the old one: the leftover stays an orphan.
    await apps.create_namespaced_deployment(NS, deployment("a"))
    assert emu.get("configmaps", "dep", NS) is not None

    owner_b = await apps.create_namespaced_deployment(NS, deployment("b"))
    await core.create_namespaced_config_map(
        NS, {**config_map("dep-b"), "metadata": {"name": "dep-b",
                                                  "ownerReferences": owned_by(owner_b)}}
    )  # fmt: skip
    await apps.delete_namespaced_deployment(
        "b", NS, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    marked = emu.get("deployments", "b", NS)
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    assert emu.get("configmaps", "dep-b", NS) is not None

    emu.resume_gc()
    assert emu.get("configmaps", "dep", NS) is None
    assert emu.get("configmaps", "dep-b", NS) is None
    assert emu.get("deployments", "b", NS) is None
    assert emu.get("deployments", "a", NS) is not None  # the new one is nobody's dependent


async def test_replicasets_are_served_and_listed_by_label(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    body = deployment("rs")
    body["kind"] = "ReplicaSet"
    await apps.create_namespaced_replica_set(NS, body)
    listed = await apps.list_namespaced_replica_set(NS, label_selector="app=rs")
    (rs,) = listed.items
    assert rs.status.replicas == 0 and rs.spec.replicas == 1
    assert (await apps.list_namespaced_replica_set(NS, label_selector="app=x")).items == []


async def test_the_kubelet_view_expands_args_from_a_secret(emu: KubeEmulator) -> None:
    """`$(VAR)` in args comes from env, envFrom and secretKeyRef, as the kubelet expands it;
    a missing Secret or key is the kubelet's CreateContainerConfigError."""
    from tests.k8s_emulator.kubelet import ContainerConfigError

    emu.ensure_namespace(NS)
    emu.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "stringData": {"SRC": "https://u:p@h/x?sig=1", "K": "v"}}, NS)  # fmt: skip
    container = {
        "name": "ui", "image": "x", "command": ["serve"],
        "args": ["--source", "$(SRC)", "--k", "$(K)", "--left", "$(NOPE)", "$$(SRC)"],
        "env": [{"name": "SRC", "valueFrom": {"secretKeyRef": {"name": "s", "key": "SRC"}}}],
        "envFrom": [{"secretRef": {"name": "s"}}],
    }  # fmt: skip
    pod = {"metadata": {"name": "p", "namespace": NS}, "spec": {"containers": [container]}}
    assert emu.container_argv(pod, "ui") == [
        "serve", "--source", "https://u:p@h/x?sig=1", "--k", "v", "--left", "$(NOPE)", "$(SRC)"
    ]  # fmt: skip
    container["env"] = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "Y"}}}]
    with pytest.raises(ContainerConfigError, match="couldn't find key Y in Secret vis/s"):
        emu.container_argv(pod, "ui")
    container["env"], container["envFrom"] = [], [{"secretRef": {"name": "gone"}}]
    with pytest.raises(ContainerConfigError, match='secret "gone" not found'):
        emu.container_argv(pod, "ui")


async def test_network_policies_get_the_api_servers_checks(emu: KubeEmulator) -> None:
    emu.ensure_namespace(NS)

    def policy(egress: list[dict[str, Any]], types: list[str] | None = None) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "np"},
                "spec": {"podSelector": {}, "policyTypes": types or ["Egress"],
                         "egress": egress}}

    good = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
             "ports": [{"port": 53, "protocol": "UDP"}, {"port": 1000, "endPort": 2000}]}]
    emu.create(policy(good), NS)
    bad = {
        "spec.egress[0].to[0].ipBlock.cidr": [{"to": [{"ipBlock": {"cidr": "10.0.0/8"}}]}],
        "spec.egress[0].to[0].ipBlock.except[0]": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}],
        "spec.egress[0].to[0]: Forbidden": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}],
        "spec.egress[0].ports[0].protocol": [{"ports": [{"port": 53, "protocol": "ICMP"}]}],
        "spec.egress[0].ports[0].port": [{"ports": [{"port": 70000}]}],
        "spec.egress[0].ports[0].endPort": [{"ports": [{"port": 2000, "endPort": 1000}]}],
    }  # fmt: skip
    for field, egress in bad.items():
        with pytest.raises(ApiError) as caught:
            emu.create({**policy(egress), "metadata": {"name": "bad"}}, NS)
        assert caught.value.code == 422 and field in caught.value.message, field
    with pytest.raises(ApiError) as caught:
        emu.create({**policy(good, ["Egress", "Sideways"]), "metadata": {"name": "bad"}}, NS)
    assert "spec.policyTypes[1]" in caught.value.message
