"""A message is not an instruction: the sources it names are checked, and staging them reaches
no address the operator did not allow (issue 15, class 5).

Every server here listens on loopback and counts the requests it gets: a refusal must come
before any connection, so a refused request leaves the recorder at zero hits. Addresses that
are not on this machine (10.x, 169.254.169.254) are only ever named, never connected to: the
policy refuses them before a socket exists.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from idds_vis.agent.intake import Intake, MessageTrust
from idds_vis.agent.resolver import TaskResolver
from idds_vis.domain.errors import SourceUnreachable, StagingError
from idds_vis.domain.models import Instance, InstanceKey, StagedArtefacts, VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.domain.source_policy import (
    AddressPolicy,
    MessageSources,
    SourcePolicy,
)
from idds_vis.ledger import SqlLedger
from idds_vis.ports.source import Delivery
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_agent, message_trust
from idds_vis.staging import ArchiveStager
from idds_vis.staging.download import PUBLIC_UNREACHABLE, GuardedResolver, download
from idds_vis.staging.guarded import GuardedStager
from idds_vis.staging.sources import HttpSource
from tests.fakes import FakeDeployer, FakeStager, make_agent, wait_for_phase

HANG_GUARD = 60.0  # a hang guard, not a speed claim


# -- an in-memory broker and a recording agent ----------------------------------------------


class MemorySource:
    """The MessageSource port in memory; ``messages()`` ends when nothing is queued."""

    def __init__(self, messages: Iterable[bytes | tuple[bytes, dict[str, str]]] = ()) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.settled: list[tuple[str, str]] = []
        self.reasons: dict[str, str] = {}
        for i, item in enumerate(messages):
            body, headers = item if isinstance(item, tuple) else (item, {})
            self.queue.put_nowait(Delivery(headers, body, f"m{i}", "sub-0", "/queue/x"))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def messages(self) -> AsyncIterator[Delivery]:
        while not self.queue.empty():
            yield self.queue.get_nowait()

    async def ack(self, delivery: Delivery) -> None:
        self.settled.append(("ack", delivery.message_id))

    async def nack(self, delivery: Delivery) -> None:
        self.settled.append(("nack", delivery.message_id))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.settled.append(("dead_letter", delivery.message_id))
        self.reasons[delivery.message_id] = reason


def instance_of(request: VisRequest) -> Instance:
    now = datetime.now(UTC)
    return Instance(request.task_id, request.tool, request.key.name, Phase.REQUESTED,
                    request.source, request.ttl, now, now, origin=request.origin,
                    requested_by=request.requested_by)  # fmt: skip


@dataclass
class RecordingAgent:
    records: dict[InstanceKey, VisRequest] = field(default_factory=dict)
    ended: list[str] = field(default_factory=list)

    async def submit(self, request: VisRequest) -> tuple[Instance, bool]:
        created = request.key not in self.records
        self.records.setdefault(request.key, request)
        return instance_of(self.records[request.key]), created

    async def end(self, key: InstanceKey) -> Instance:
        self.ended.append(key.task_id)
        return instance_of(self.records[key])

    async def get(self, key: InstanceKey) -> Instance | None:
        return instance_of(self.records[key]) if key in self.records else None


def vis_request(task_id: str = "user.jdoe.train/7", **fields: object) -> bytes:
    return json.dumps({"msg_type": "vis_request", "task_id": task_id, **fields}).encode()


async def run_intake(source: MemorySource, intake: Intake) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await intake.run()


def intake_for(source: MemorySource, agent: RecordingAgent, **kwargs: object) -> Intake:
    return Intake(source, agent, resolver=TaskResolver(), instances=agent.get,
                  **kwargs)  # type: ignore[arg-type]  # fmt: skip


# -- a loopback server that counts what reaches it ------------------------------------------


@dataclass
class Recorder:
    url: str
    hits: list[str]


@asynccontextmanager
async def recorder(host: str = "127.0.0.1", redirect_to: str | None = None,
                   ) -> AsyncIterator[Recorder]:  # fmt: skip
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path_qs)
        if request.path == "/redirect" and redirect_to:
            raise web.HTTPFound(redirect_to)
        if request.path.startswith("/missing"):
            raise web.HTTPNotFound()
        return web.Response(body=b"not an archive")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Recorder(f"http://{host}:{port}", hits)
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REBOUND = "files.rebind.example"  # a public-looking name whose DNS answers loopback


@pytest.fixture
def rebound_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """``REBOUND`` resolves to 127.0.0.1 in this process (what an attacker's DNS would say)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == REBOUND else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return REBOUND


# -- 1. what a message may name -------------------------------------------------------------

LOCAL = [
    "/home/victim/.idds-vis/instances",
    "relative/mlruns",
    "~victim/secret.tgz",
    "file:///etc/passwd",
    "FILE://localhost/home/victim/store.tgz",
    "C:\\Users\\victim",
]


@pytest.mark.parametrize("source", LOCAL)
def test_a_local_path_or_file_url_from_a_message_is_refused(source: str) -> None:
    verdict = SourcePolicy().check_message_source(source)
    assert not verdict and "local paths and file: URLs are not accepted" in verdict.reason


@pytest.mark.parametrize("source", LOCAL[:4])
async def test_the_intake_dead_letters_a_local_source_and_records_nothing(source: str) -> None:
    messages = MemorySource([vis_request(source=source)])
    agent = RecordingAgent()
    await run_intake(messages, intake_for(messages, agent))
    assert agent.records == {}
    assert messages.settled == [("dead_letter", "m0")]
    assert "local paths and file: URLs are not accepted from messages" in messages.reasons["m0"]


INTERNAL = [
    "http://127.0.0.1:8080/x.tgz",
    "http://10.1.2.3/x.tgz",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9000/x.tgz",
    "https://[::ffff:127.0.0.1]/x.tgz",
    "http://192.168.0.10/x.tgz",
    "http://100.64.0.1/x.tgz",
    "http://0.0.0.0:8080/x.tgz",
    "http://localhost:8080/x.tgz",
    "http://admin.localhost./x.tgz",
]


@pytest.mark.parametrize("source", INTERNAL)
async def test_an_internal_address_from_a_message_is_refused_at_intake(source: str) -> None:
    messages = MemorySource([vis_request(source=source)])
    agent = RecordingAgent()
    await run_intake(messages, intake_for(messages, agent))
    assert agent.records == {} and messages.settled == [("dead_letter", "m0")]
    assert "may not name loopback, private or link-local addresses" in messages.reasons["m0"]


def test_an_allowlisted_private_network_is_accepted() -> None:
    policy = SourcePolicy(addresses=AddressPolicy.from_setting(["10.0.0.0/8"]))
    assert policy.check_message_source("http://10.1.2.3/x.tgz")
    assert not policy.check_message_source("http://10.1.2.3@127.0.0.1/x.tgz")


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("s3://team-ml/run1.tgz", True),
        ("s3://agent-private/keys.tgz", False),
        ("rucio://user.jdoe:user.jdoe.mlflow.tgz", True),
        ("rucio:user.jdoe.mlflow.tgz", True),  # the scope implied by the name
        ("rucio://data18_13TeV:some.dataset", False),
        ("user.other.mlflow.tgz", False),  # a bare name is a local path, not a DID
        ("https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid=1", True),
        ("https://evil.example.org/x.tgz", False),
        ("https://bigpanda.cern.ch:8443/x.tgz", False),  # the port is not the listed one
        ("http://bigpanda.cern.ch/x.tgz", False),  # plain http is not in the schemes
    ],
)
async def test_s3_rucio_and_hosts_outside_the_allowlist_are_refused(
    source: str, allowed: bool
) -> None:
    policy = SourcePolicy(
        sources=MessageSources.from_setting(
            {
                "schemes": ["https", "s3", "rucio"],
                "hosts": ["bigpanda.cern.ch"],
                "s3_buckets": ["team-ml"],
                "rucio_scopes": ["user.jdoe"],
            }
        )
    )
    messages = MemorySource([vis_request(source=source)])
    agent = RecordingAgent()
    await run_intake(messages, intake_for(messages, agent, trust=MessageTrust(policy=policy)))
    assert bool(agent.records) is allowed
    assert messages.settled == [("ack" if allowed else "dead_letter", "m0")]


def test_by_default_s3_and_rucio_are_refused_from_messages() -> None:
    # They use the agent's own credentials: only listed buckets and scopes may be named.
    assert not SourcePolicy().check_message_source("s3://any/x.tgz")
    assert not SourcePolicy().check_message_source("rucio://user.x:y")
    assert SourcePolicy().check_message_source("https://bigpanda.cern.ch/x?workloadid=1")


async def test_an_idds_visualization_works_source_is_checked_too() -> None:
    """The VisualizationWork's source, read through the iDDS REST API, is the workflow
    author's: the same policy applies (the work_processing message is dead-lettered)."""

    class Works:
        async def visualization_request(self, request_id: int, transform_id: int | None,
                                        workload_id: int) -> VisRequest:  # fmt: skip
            return VisRequest("4242", source="/home/victim/mlruns", origin="idds")

    body = json.dumps({"msg_type": "work_processing", "status": "Finished", "request_id": 1,
                       "workload_id": 4242, "transform_id": 2}).encode()  # fmt: skip
    messages = MemorySource([body])
    agent = RecordingAgent()
    intake = Intake(messages, agent, resolver=TaskResolver(idds=Works()))  # type: ignore[arg-type]
    await run_intake(messages, intake)
    assert agent.records == {} and messages.settled == [("dead_letter", "m0")]


# -- 2. the address guard while staging -----------------------------------------------------


async def guarded_download(url: str, tmp_path: Path, policy: AddressPolicy | None = None) -> Path:
    return await download(HttpSource(url), tmp_path, 1 << 20, 30, guard=policy or AddressPolicy())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", REBOUND])
async def test_loopback_is_not_connected_to_by_address_or_by_name(
    host: str, tmp_path: Path, rebound_name: str
) -> None:
    """An IP literal skips the resolver (the socket factory refuses it); a name resolving to
    loopback is refused by the resolver and again by the socket factory."""
    async with recorder() as server:
        url = server.url.replace("127.0.0.1", host) + "/x.tgz"
        with pytest.raises(SourceUnreachable) as caught:
            await guarded_download(url, tmp_path)
        assert server.hits == []
    assert caught.value.reason == PUBLIC_UNREACHABLE


async def test_ipv6_loopback_is_not_connected_to(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreachable) as caught:
        await guarded_download("http://[::1]:9/x.tgz", tmp_path)
    assert caught.value.reason == PUBLIC_UNREACHABLE


async def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(tmp_path: Path) -> None:
    """127.0.0.1 is allowlisted here (it stands for an allowed host); it redirects to
    127.0.0.2, which is not: the redirect is checked like the first request."""
    async with recorder("127.0.0.2") as inner:
        async with recorder("127.0.0.1", redirect_to=inner.url + "/secret") as outer:
            policy = AddressPolicy.from_setting(["127.0.0.1/32"])
            with pytest.raises(SourceUnreachable):
                await guarded_download(outer.url + "/redirect", tmp_path, policy)
            assert outer.hits == ["/redirect"]
        assert inner.hits == []


async def test_an_allowlisted_host_name_may_resolve_to_loopback(tmp_path: Path) -> None:
    async with recorder() as server:
        url = server.url.replace("127.0.0.1", "localhost") + "/x.tgz"
        path = await guarded_download(url, tmp_path, AddressPolicy.from_setting(["localhost"]))
        assert path.read_bytes() == b"not an archive" and server.hits == ["/x.tgz"]


async def test_the_guarded_stager_refuses_a_name_resolving_to_loopback(
    tmp_path: Path, rebound_name: str
) -> None:
    async with recorder() as server:
        stager = GuardedStager(ArchiveStager(), SourcePolicy())
        url = server.url.replace("127.0.0.1", rebound_name) + "/x.tgz"
        with pytest.raises(SourceUnreachable):
            await stager.stage(url, tmp_path / "dest")
        assert server.hits == []
        with pytest.raises(StagingError, match="local paths and file: URLs are not accepted"):
            await stager.stage(str(tmp_path), tmp_path / "dest")


# -- 3. failure reasons are no oracle -------------------------------------------------------


async def test_404_and_connection_refused_give_the_same_public_reason(tmp_path: Path) -> None:
    """Even for an address the operator allowed, what the public sees of a failure names no
    host, port or path, and does not tell a missing URL from a closed port."""
    policy = SourcePolicy(addresses=AddressPolicy.from_setting(["127.0.0.1/32"]))
    stager = GuardedStager(ArchiveStager(), policy)
    port = closed_port()
    async with recorder() as server:
        with pytest.raises(SourceUnreachable) as missing:
            await stager.stage(server.url + "/missing/secret-path", tmp_path / "a")
        assert server.hits == ["/missing/secret-path"]
    with pytest.raises(SourceUnreachable) as refused:
        await stager.stage(f"http://127.0.0.1:{port}/secret-path", tmp_path / "b")
    assert missing.value.reason == refused.value.reason == PUBLIC_UNREACHABLE
    for reason in (missing.value.reason, refused.value.reason):
        assert "127.0.0.1" not in reason and str(port) not in reason and "secret" not in reason


async def test_the_resolver_drops_internal_addresses_of_a_mixed_answer() -> None:
    """A name that resolves to a public and a private address keeps only the public one (the
    socket factory would refuse the other; the resolver makes aiohttp never try it)."""

    class Inner:
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            ips = ("10.0.0.7", "93.184.216.34", "169.254.169.254")
            return [{"hostname": host, "host": ip, "port": port, "family": 2, "proto": 0,
                     "flags": 0} for ip in ips]  # fmt: skip

        async def close(self) -> None: ...

    listed: set[str] = set()
    resolver = GuardedResolver(AddressPolicy(), listed)
    resolver._inner = Inner()  # type: ignore[assignment]
    kept = await resolver.resolve("mixed.example", 80)
    assert [r["host"] for r in kept] == ["93.184.216.34"] and listed == set()
    allowing = GuardedResolver(AddressPolicy.from_setting(["mixed.example"]), listed)
    allowing._inner = Inner()  # type: ignore[assignment]
    assert len(await allowing.resolve("mixed.example", 80)) == 3
    assert "10.0.0.7" in listed  # the socket factory accepts what a listed name resolved to


# -- 4. the agent as wired: message sources under the guard, the CLI's as before ---------------


async def test_the_wired_agent_stages_message_sources_under_the_guard(
    tmp_path: Path, rebound_name: str
) -> None:
    settings = Settings(state_dir=tmp_path / "state", ui_stub=True, workers=1)
    agent = build_agent(settings)
    events = agent.events.subscribe()
    await agent.start()
    try:
        async with recorder() as server:
            url = server.url.replace("127.0.0.1", rebound_name) + "/x.tgz"
            messages = MemorySource([vis_request(task_id="7", source=url)])
            intake = Intake(messages, agent, resolver=TaskResolver(),
                            trust=message_trust(settings))  # fmt: skip
            async with asyncio.timeout(HANG_GUARD):
                await intake.run()
                from_message = await wait_for_phase(agent, events, "7", {Phase.FAILED, Phase.READY})
                assert from_message.reason == PUBLIC_UNREACHABLE and server.hits == []
                # The same URL from the operator's CLI is fetched (it is no archive, so fails).
                await agent.submit(VisRequest("8", source=url, origin="cli"))
                from_cli = await wait_for_phase(agent, events, "8", {Phase.FAILED, Phase.READY})
            assert server.hits == ["/x.tgz"] and "neither a directory nor" in str(from_cli.reason)
    finally:
        await agent.stop()


async def test_an_internal_error_does_not_put_its_text_in_the_public_reason(tmp_path: Path):
    """Reasons are shown on pages and in the monitor's JSON: an unexpected exception's text
    (which may name internal hosts or paths) stays in the log."""

    class Leaky(FakeStager):
        async def stage(self, source: str, dest: Path) -> StagedArtefacts:
            raise RuntimeError("GET http://10.0.0.5:8080/internal/secret failed")

    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    agent = make_agent(ledger, FakeDeployer(tmp_path / "ui"), Leaky())
    events = agent.events.subscribe()
    await agent.start()
    try:
        await agent.submit(VisRequest("9", source="https://files.example.org/a.tgz"))
        async with asyncio.timeout(HANG_GUARD):
            failed = await wait_for_phase(agent, events, "9", {Phase.FAILED})
    finally:
        await agent.stop()
        await ledger.close()
    assert failed.reason == "internal error in idds-vis (RuntimeError)"
