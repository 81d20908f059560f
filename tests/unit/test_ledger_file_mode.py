"""The SQLite ledger holds every UI's URL (where no web app guards a UI, its path is the
capability): other local users may not read it (red team, issue 18)."""

from __future__ import annotations

import stat
from pathlib import Path

from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import build_ledger


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_ledger_and_state_dir_are_this_users_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ledger = build_ledger(Settings(state_dir=state))
    await ledger.open()
    try:
        assert _mode(state) == 0o700
        files = [p for p in state.iterdir() if p.name.startswith("ledger.db")]
        assert files, "no ledger file"
        for path in files:  # the database and whatever journal SQLite keeps beside it
            assert _mode(path) & 0o077 == 0, (path.name, oct(_mode(path)))
    finally:
        await ledger.close()


async def test_an_existing_world_readable_ledger_is_closed_to_other_users(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "ledger.db").touch(mode=0o644)
    (state / "ledger.db").chmod(0o644)
    ledger = build_ledger(Settings(state_dir=state))
    await ledger.open()
    await ledger.close()
    assert _mode(state / "ledger.db") == 0o640  # group kept: a deliberate shared group
    assert _mode(state) == 0o755  # the operator's directory keeps its mode


def test_the_agent_lock_makes_a_new_state_dir_private_too(tmp_path: Path) -> None:
    """`idds-vis agent` takes its lock before it builds the ledger (an operator found the state
    dir 0755 when made that way)."""
    from idds_vis.runtime.wiring import agent_lock

    state = tmp_path / "new-state"
    with agent_lock(Settings(state_dir=state)):
        assert _mode(state) == 0o700
