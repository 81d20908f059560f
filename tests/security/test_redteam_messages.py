"""Red team, message sources: IPv6 forms that carry an internal IPv4 address.

Python 3.11's ``ipaddress`` calls these global, so the address guard let a socket be made for
them: the well-known NAT64 prefix (on an IPv6-only cluster with DNS64, ``64:ff9b::10.0.0.7`` is
``10.0.0.7`` through the NAT64 gateway), the local-use NAT64 prefix, IPv4-compatible and
IPv4-translated addresses and site-local ``fec0::/10``. None is connected to here: the socket
factory and the resolver are asked directly, as aiohttp asks them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from idds_vis.agent.intake import Intake, Outcome
from idds_vis.agent.resolver import TaskResolver
from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from idds_vis.domain.source_policy import AddressPolicy, SourcePolicy
from idds_vis.ledger import SqlLedger
from idds_vis.staging.download import AddressRefused, GuardedResolver, guarded_socket_factory
from tests.fakes import FakeDeployer, FakeStager, make_agent, wait_for_phase
from tests.security.test_message_senders import HANG_GUARD, TRUST, body, delivery, signed
from tests.security.test_message_sources import MemorySource

INTERNAL_V6 = [
    "64:ff9b::a00:7",  # NAT64 of 10.0.0.7
    "64:ff9b::a9fe:a9fe",  # NAT64 of the cloud metadata address
    "64:ff9b::7f00:1",  # NAT64 of loopback
    "64:ff9b:1::a00:7",  # local-use NAT64 prefix (RFC 8215)
    "::a00:7",  # IPv4-compatible 10.0.0.7
    "::7f00:1",  # IPv4-compatible loopback
    "::ffff:0:a00:7",  # IPv4-translated (SIIT) 10.0.0.7
    "fec0::1",  # site-local
]


@pytest.mark.parametrize("address", INTERNAL_V6)
def test_ipv6_forms_of_internal_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", INTERNAL_V6)
def test_no_socket_is_made_for_them(address: str) -> None:
    make = guarded_socket_factory(AddressPolicy(), set())
    with pytest.raises(AddressRefused):
        make((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 80, 0, 0)))


@pytest.mark.parametrize("address", INTERNAL_V6)
def test_a_message_naming_them_is_refused_at_intake(address: str) -> None:
    verdict = SourcePolicy().check_message_source(f"https://[{address}]/metrics.tgz")
    assert not verdict and "loopback, private or link-local" in verdict.reason


async def test_a_name_resolving_to_them_is_refused() -> None:
    class Inner:
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            return [{"hostname": host, "host": ip, "port": port, "family": 10, "proto": 0,
                     "flags": 0} for ip in INTERNAL_V6]  # fmt: skip

        async def close(self) -> None: ...

    resolver = GuardedResolver(AddressPolicy(), set())
    resolver._inner = Inner()  # type: ignore[assignment]
    with pytest.raises(AddressRefused):
        await resolver.resolve("dns64.example", 443)


def test_nat64_of_a_public_address_and_listed_networks_still_pass() -> None:
    assert AddressPolicy().allows("64:ff9b::5db8:d822")  # 93.184.216.34 through NAT64
    assert AddressPolicy.from_setting(["10.0.0.0/8"]).allows("64:ff9b::a00:7")
    assert AddressPolicy.from_setting(["fec0::/10"]).allows("fec0::1")


# -- teardown: a sender's name is not a PanDA or web user's name ------------------------------


@pytest.mark.parametrize("origin", ["panda", "permalink", "cli"])
async def test_a_sender_named_like_a_user_cannot_end_that_users_ui(
    tmp_path: Path, origin: str
) -> None:
    """``requested_by`` holds a PanDA task owner or a signed-in web user for the UIs those
    start, and a verified sender's name for the UIs its messages start. A sender whose name
    happens to be a user's (``alice`` in the keys file, ``alice`` in PanDA or the IdP) ended
    that user's UIs: the name matched although the request never came from a message."""
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()
    deployer = FakeDeployer(tmp_path / "ui")
    agent = make_agent(ledger, deployer, FakeStager())
    await agent.start()
    try:
        events = agent.events.subscribe()
        task = "4242"
        request = VisRequest(task, source="https://x.example/a.tgz", origin=origin)
        await agent.submit(dataclasses.replace(request, requested_by="alice"))
        intake = Intake(MemorySource(), agent, resolver=TaskResolver(), trust=TRUST)
        async with asyncio.timeout(HANG_GUARD):
            await wait_for_phase(agent, events, task, {Phase.READY})
            teardown = signed("alice", body("vis_teardown", task))
            assert await intake.handle(delivery(teardown)) is Outcome.IGNORED
            # The production role still may.
            prod = signed("prod", body("vis_teardown", task))
            assert await intake.handle(delivery(prod, 1)) is Outcome.ENDED
    finally:
        await agent.stop()
        await ledger.close()
