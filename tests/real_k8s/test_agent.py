"""``idds-vis agent`` as a process on the real control plane, as conf/'s ServiceAccount: launch
to ready through the real readiness probe, the leader Lease, SIGKILL (one UI still starting), a
restart that reconciles (an orphan removed, a UI deleted meanwhile started again, a live one
adopted, the one interrupted mid-start adopted and finished), and the reaper.

The probe reaches the stand-in ingress (stand_ins.py) through the UIs' public host, mapped to
loopback in the agent process only (agent_main.py); TLS is verified against the test CA.
Nothing sleeps to synchronise: each wait polls another process's state under a hang guard.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from kubernetes_asyncio import client

from idds_vis.deploy.kubernetes import objects
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.runtime.config import Settings
from tests.agent_process import AgentProcess
from tests.real_k8s.cluster_view import ClusterView, owner_uids, until
from tests.real_k8s.conftest import REPO, AgentAccess
from tests.real_k8s.control_plane import INGRESS_HOST, ControlPlane
from tests.real_k8s.stand_ins import StandInIngress, StandInKubelet, admin_api
from tests.real_k8s.test_deployer import instance

SOURCE = "https://bigpanda.example/idds/downloadhpometrics/?workloadid={}"  # never fetched here
START_GUARD = 120.0


@pytest_asyncio.fixture
async def view(k8s: ControlPlane, agent_access: AgentAccess) -> AsyncIterator[ClusterView]:
    api = await admin_api(k8s.admin_kubeconfig)
    yield ClusterView(api, agent_access.namespace)
    await api.close()


def agent_settings(workdir: Path, access: AgentAccess) -> dict[str, Any]:
    return {
        "state_dir": str(workdir / "state"),
        "deployer": "kubernetes",
        "namespace": access.namespace,
        "kubeconfig": str(access.kubeconfig),
        "public_host": INGRESS_HOST,
        "workers": 2,
        "start_timeout": "90s",
        "lease_ttl": "4s",  # a successor takes over a SIGKILLed leader's Lease within ~5 s
    }


@asynccontextmanager
async def agent_process(
    k8s: ControlPlane, workdir: Path, settings: dict[str, Any], ingress: StandInIngress, tag: str
) -> AsyncIterator[AgentProcess]:
    config = workdir / "agent.yaml"
    config.write_text(yaml.safe_dump(settings))
    log = workdir / f"agent-{tag}.log"
    env = {**os.environ, "SSL_CERT_FILE": str(k8s.ca_file),
           "IDDS_VIS_TEST_INGRESS": f"{INGRESS_HOST}=127.0.0.1:{ingress.port}"}  # fmt: skip
    argv = [sys.executable, "-m", "tests.real_k8s.agent_main", "--config", str(config), "agent"]
    with log.open("w") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                text=True)  # fmt: skip
    agent = AgentProcess(proc, log, Path(settings["state_dir"]))
    try:
        async with asyncio.timeout(START_GUARD):
            while "agent running" not in log.read_text():
                agent.check_running()
                await asyncio.sleep(0.2)  # another process's output; nothing to wait on instead
        yield agent
    finally:
        if proc.poll() is None:
            proc.terminate()
            assert await asyncio.to_thread(proc.wait, 60) == 0, agent.log_tail()


async def phase_of(ledger: SqlLedger, task: str, agent: AgentProcess,
                   phases: set[Phase]) -> Instance:  # fmt: skip
    async with asyncio.timeout(START_GUARD):
        while True:
            agent.check_running()
            inst = await ledger.get(InstanceKey(task, "mlflow"))
            if inst is not None and inst.phase in phases:
                return inst
            await asyncio.sleep(0.2)


async def leases(view: ClusterView) -> list[dict[str, Any]]:
    api = client.CoordinationV1Api(view.api)
    listed = await api.list_namespaced_lease(view.ns)
    items: list[dict[str, Any]] = view.api.sanitize_for_serialization(listed)["items"]
    return items


async def test_agent_launch_sigkill_restart_reconcile_and_reaper(
    k8s: ControlPlane, agent_access: AgentAccess, kubelet: StandInKubelet,
    ingress: StandInIngress, view: ClusterView, tmp_path: Path,
) -> None:  # fmt: skip
    settings = agent_settings(tmp_path, agent_access)
    ledger = SqlLedger(Settings(state_dir=Path(settings["state_dir"])).db_url)
    mid = InstanceKey("mid", "mlflow").name
    kubelet.held.add(mid)  # its pod is scheduled but not Ready when the agent is killed
    try:
        async with agent_process(k8s, tmp_path, settings, ingress, "first") as first:
            for task in ("keep", "lost", "mid"):
                await ledger.submit(VisRequest(task, source=SOURCE.format(task)), datetime.now(UTC))
            ready = {t: await phase_of(ledger, t, first, {Phase.READY, Phase.FAILED})
                     for t in ("keep", "lost")}  # fmt: skip
            for inst in ready.values():
                assert inst.phase is Phase.READY, inst.reason
                # Ready because the agent's own probe got answers through the ingress.
                assert ingress.hits.get(inst.name, 0) >= 3, ingress.hits
            (lease,) = await leases(view)
            first_holder = lease["spec"]["holderIdentity"]
            assert first_holder
            lost_uid = ready["lost"].handle["uid"]
            starting = await phase_of(ledger, "mid", first, {Phase.STARTING, Phase.FAILED})
            assert starting.phase is Phase.STARTING, starting.reason
            await until("the interrupted UI's pod is scheduled", lambda: kubelet.bound(mid))
            mid_uid = starting.handle["uid"]
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=30)

        # While no agent runs: one UI deleted by hand, a stray one with our labels appears.
        await view.apps.delete_namespaced_deployment(
            ready["lost"].name, view.ns, propagation_policy="Background")  # fmt: skip
        orphan = instance("orphan-1")
        stray = objects.deployment(orphan, KubeSettings(namespace=view.ns), "x", None, False)
        await view.apps.create_namespaced_deployment(view.ns, stray)  # type: ignore[arg-type]

        async with agent_process(k8s, tmp_path, settings, ingress, "second") as second:
            await kubelet.release(mid)

            async def reconciled() -> bool:
                names = {d["metadata"]["name"] for d in
                         (await view.of_instance(orphan.name)).get("Deployment", [])}  # fmt: skip
                return not names

            await until("the orphan is removed", reconciled)
            again = await phase_of(ledger, "lost", second, {Phase.READY, Phase.FAILED})
            assert again.phase is Phase.READY, again.reason
            assert again.handle["uid"] != lost_uid
            assert again.expires_at == ready["lost"].expires_at  # a restart never extends
            (lease,) = await leases(view)
            assert lease["spec"]["holderIdentity"] not in (None, first_holder)
            # The interrupted UI is deleted and started from the beginning (the agent cannot
            # know how far it got), at once: the old dependents are still there, owned by the
            # deleted root. The new UI must end up with its own, none lost to the collector.
            finished = await phase_of(ledger, "mid", second, {Phase.READY, Phase.FAILED})
            assert finished.phase is Phase.READY, finished.reason
            new_uid = finished.handle["uid"]
            assert new_uid != mid_uid

            async def old_root_forgotten() -> bool:
                return await view.owned_by(mid_uid) == []

            await until("nothing refers to the interrupted UI's first root", old_root_forgotten)
            found = await view.of_instance(mid)
            for kind in ("Secret", "Service", "Ingress", "NetworkPolicy"):
                assert [owner_uids(o) for o in found.get(kind, [])] == [[new_uid]], kind

            keep = ready["keep"]
            kept = await view.of_instance(keep.name)
            assert [d["metadata"]["uid"] for d in kept["Deployment"]] == [keep.handle["uid"]]
            now = datetime.now(UTC)
            await ledger.set_expiry(keep.key, now, now)  # what `idds-vis teardown` does
            done = await phase_of(ledger, "keep", second, {Phase.EXPIRED, Phase.FAILED})
            assert done.phase is Phase.EXPIRED, done.reason

            async def keep_gone() -> bool:
                return await view.of_instance(keep.name) == {}

            await until("every object of the ended UI is gone", keep_gone)
            second.check_running()
    finally:
        await ledger.close()
