"""Issue 17: the one access check (``domain/access.py``), the UI process's proxy guard
(``ui/proxy_guard.py``, as uvicorn calls it), and the random path in the ledger (a new column
on an older ledger, a new token with every launch)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from idds_vis.domain.access import (
    ANONYMOUS,
    NOT_SHARED,
    PUBLIC_NOT_ALLOWED,
    Grant,
    may_view,
    parse_visibility,
)
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.identity import Identity
from idds_vis.domain.models import InstanceKey, VisRequest
from idds_vis.domain.naming import instance_name
from idds_vis.domain.phases import Phase
from idds_vis.ledger import SqlLedger
from idds_vis.ui.proxy_guard import ProxyGuard

JANE = Identity(user="Jane Doe", subject="j", groups=frozenset({"atlas"}))
JOHN = Identity(user="John Smith", subject="s", groups=frozenset({"cms"}))
PROD = Identity(user="robot x", subject="x", production=True)
SUPPORT = Identity(user="Sue", subject="u", groups=frozenset({"atlas/ml-support"}))
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def grant(visibility: str | None = None, requested_by: str | None = "Jane Doe") -> Grant:
    return Grant(owner="Jane Doe", requested_by=requested_by,
                 visibility=parse_visibility(visibility),
                 manager_groups=("/atlas/ml-support",))  # fmt: skip


@pytest.mark.parametrize(
    ("who", "visibility", "public", "allowed", "reason"),
    [
        (JANE, None, False, True, None),
        (JOHN, None, False, False, NOT_SHARED),
        (None, None, False, False, ANONYMOUS),
        (PROD, None, False, True, None),
        (SUPPORT, None, False, True, None),  # manages the tool's UIs: sees them
        (JOHN, "groups:cms", False, True, None),
        (JOHN, "groups:/atlas", False, False, NOT_SHARED),
        (JOHN, "signed-in", False, True, None),
        (None, "signed-in", False, False, ANONYMOUS),
        (JOHN, "public", False, False, PUBLIC_NOT_ALLOWED),
        (None, "public", False, False, ANONYMOUS),
        (None, "public", True, True, None),
    ],
)
def test_who_sees_a_ui(
    who: Identity | None, visibility: str | None, public: bool, allowed: bool, reason: str | None
) -> None:
    decision = may_view(who, grant(visibility), login=True, public_allowed=public)
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_whoever_asked_for_the_ui_sees_it_and_login_off_lets_the_path_decide() -> None:
    asked = Grant(owner="Jane Doe", requested_by="John Smith")
    assert may_view(JOHN, asked, login=True).allowed
    assert may_view(None, grant(), login=False).allowed


@pytest.mark.parametrize("text", ["everyone", "groups:", "groups: , ", "PUBLIC"])
def test_an_unknown_visibility_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidRequest, match="is not one of private, signed-in, public"):
        parse_visibility(text)


async def _call(guard: ProxyGuard, headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    reached: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await ProxyGuard(app, guard.secret.decode() if guard.secret else None)(
        {"type": "http", "method": "GET", "path": "/vis/x/", "headers": headers}, receive, send
    )
    return sent[0]["status"], bool(reached)


async def test_the_ui_process_answers_only_requests_with_the_secret() -> None:
    guard = ProxyGuard(None, "s3cret-value")
    assert await _call(guard, []) == (403, False)
    assert await _call(guard, [(b"x-idds-vis-proxy", b"guess")]) == (403, False)
    assert await _call(guard, [(b"x-idds-vis-proxy", b"s3cret-value"),
                               (b"x-idds-vis-proxy", b"s3cret-value")]) == (403, False)  # fmt: skip
    assert await _call(guard, [(b"x-idds-vis-proxy", b"s3cret-value")]) == (200, True)
    # Without a secret (a pod behind forward-auth) the gate behind it decides.
    assert await _call(ProxyGuard(None, None), []) == (200, True)


async def test_the_path_token_is_random_new_with_each_launch_and_found_again(
    tmp_path: Path,
) -> None:
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}")
    await ledger.open()
    try:
        first, _ = await ledger.submit(VisRequest("4242", source="file:///x"), NOW)
        other, _ = await ledger.submit(VisRequest("4243", source="file:///x"), NOW)
        assert first.path_token and other.path_token and first.path_token != other.path_token
        assert instance_name("4242", "mlflow") not in first.prefix
        assert first.prefix == f"/vis/{first.path_token}"
        assert (await ledger.get_by_path(first.path_token)) == first
        assert await ledger.get_by_path(first.name) is None  # the old, computable path
        await ledger.transition(first.key, Phase.FAILED, NOW, reason="x")
        again = await ledger.relaunch(first.key, NOW + timedelta(seconds=1))
        assert again.path_token not in (None, first.path_token)
        assert await ledger.get_by_path(first.path_token) is None
    finally:
        await ledger.close()


async def test_an_older_ledger_gets_the_columns_and_keeps_its_paths(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ledger = SqlLedger(f"sqlite+aiosqlite:///{path}")
    await ledger.open()
    await ledger.submit(VisRequest("4242", source="file:///x"), NOW)
    await ledger.close()
    with sqlite3.connect(path) as db:  # as a version before issue 17 left it
        db.execute("DROP INDEX ix_vis_instances_path_token")
        db.execute("ALTER TABLE vis_instances DROP COLUMN path_token")
        db.execute("ALTER TABLE vis_instances DROP COLUMN visibility")
    ledger = SqlLedger(f"sqlite+aiosqlite:///{path}")
    await ledger.open()
    try:
        old = await ledger.get(InstanceKey("4242"))
        assert old is not None and old.path_token is None and old.visibility is None
        assert old.prefix == f"/vis/{old.name}"  # its UI runs there until relaunched
        assert await ledger.get_by_path(old.name) == old
        shared = await ledger.set_visibility(old.key, "groups:cms", NOW)
        assert shared.visibility == "groups:cms"
        new, _ = await ledger.submit(VisRequest("4243", source="file:///x"), NOW)
        assert new.path_token is not None
    finally:
        await ledger.close()
