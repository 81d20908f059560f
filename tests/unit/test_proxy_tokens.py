"""What /auth/check hands nginx (and any browser that calls it): a proof of a UI's proxy
secret that expires within minutes, never the secret (domain/proxy_tokens.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from idds_vis.domain.proxy_tokens import LIFETIME, is_proof, proof
from idds_vis.ui.proxy_guard import HEADER, ProxyGuard

SECRET = "s" * 43
NOW = 1_800_000_000.0


def test_a_proof_holds_until_its_expiry_and_not_after() -> None:
    made = proof(SECRET, NOW)
    assert SECRET not in made and made.startswith("v1.")
    assert is_proof(SECRET.encode(), made.encode(), NOW)
    assert is_proof(SECRET.encode(), made.encode(), NOW + LIFETIME - 1)
    assert not is_proof(SECRET.encode(), made.encode(), NOW + LIFETIME + 61)


def test_a_forged_or_foreign_proof_is_none() -> None:
    made = proof(SECRET, NOW)
    version, expiry, mac = made.split(".")
    later = f"{version}.{int(expiry) + 3600}.{mac}"  # its holder moves the expiry on
    far = proof(SECRET, NOW + 10 * LIFETIME)  # made (with the secret) for far ahead
    for sent in (later, far, proof("another secret", NOW), f"v2.{expiry}.{mac}",
                 made[:-1], "v1.x.y", "garbage", "é.1.2", ""):  # fmt: skip
        assert not is_proof(SECRET.encode(), sent.encode(), NOW), sent


def _status(guard: ProxyGuard, sent: str) -> int:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        seen.append(message)

    guard.app = app
    scope = {"type": "http", "headers": [(HEADER.encode(), sent.encode())]}
    asyncio.run(guard(scope, None, send))
    return int(seen[0]["status"])


def test_the_guard_takes_the_secret_or_a_live_proof() -> None:
    guard = ProxyGuard(None, SECRET)
    assert _status(guard, SECRET) == 200  # the agent's probes, the web app's own proxy
    import time

    assert _status(guard, proof(SECRET, time.time())) == 200
    assert _status(guard, proof(SECRET, time.time() - LIFETIME - 120)) == 403
    assert _status(guard, proof("another UI's secret", time.time())) == 403
