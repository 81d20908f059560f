"""Red team, message sources: IPv6 forms that carry an internal IPv4 address.

Python 3.11's ``ipaddress`` calls these global, so the address guard let a socket be made for
them: the well-known NAT64 prefix (on an IPv6-only cluster with DNS64, ``64:ff9b::10.0.0.7`` is
``10.0.0.7`` through the NAT64 gateway), the local-use NAT64 prefix, IPv4-compatible and
IPv4-translated addresses and site-local ``fec0::/10``. None is connected to here: the socket
factory and the resolver are asked directly, as aiohttp asks them.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from idds_vis.domain.source_policy import AddressPolicy, SourcePolicy
from idds_vis.staging.download import AddressRefused, GuardedResolver, guarded_socket_factory

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
