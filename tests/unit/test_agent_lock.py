"""One agent per SQLite ledger (issue 19): the lock next to the ledger file, and what the agent
says as it stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from idds_vis.domain.errors import InvalidRequest
from idds_vis.runtime.config import Settings
from idds_vis.runtime.wiring import (
    after_stop,
    agent_lock,
    build_agent,
    build_ledger,
    check_cluster_access,
    open_ledger,
    sqlite_file,
)


def test_a_second_lock_on_one_sqlite_ledger_is_refused_until_the_first_is_released(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with agent_lock(settings):
        with pytest.raises(InvalidRequest) as caught, agent_lock(settings):
            pass
        message = str(caught.value)
        assert "already runs on the SQLite ledger" in message and "PostgreSQL" in message
        assert "\n" not in message
    with agent_lock(settings):  # released: the next agent may start
        pass
    assert (tmp_path / "state" / "ledger.db.agent-lock").exists()


def test_only_a_sqlite_file_is_locked(tmp_path: Path) -> None:
    assert sqlite_file(Settings(state_dir=tmp_path)) == tmp_path / "ledger.db"
    for url in ("postgresql+asyncpg://u@db/vis", "postgresql://u@db/vis", "sqlite+aiosqlite://"):
        settings = Settings(state_dir=tmp_path, database_url=url)
        assert sqlite_file(settings) is None
        with agent_lock(settings), agent_lock(settings):  # several agents: PostgreSQL's leases
            pass


def test_the_shutdown_note_says_the_uis_keep_running_and_who_ends_them() -> None:
    assert after_stop(Settings(), 0) == "agent stopped; no UI is running"
    local = after_stop(Settings(web_port=8080), 3)
    assert local.startswith("agent stopped; 3 UIs keep running as processes of their own")
    assert "the reaper of the next agent on this ledger" in local
    assert "`idds-vis teardown --task ID` ends one now" in local
    assert "their URLs answer again once an agent or `idds-vis web` serves it" in local
    kube = after_stop(Settings(deployer="kubernetes", namespace="vis", ui_namespace="vis-uis"), 1)
    assert kube.startswith("agent stopped; 1 UI keeps running in namespace vis-uis")
    assert "kube-janitor" in kube


def test_a_bare_path_ledger_is_locked_too(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, database_url=str(tmp_path / "elsewhere.db"))
    assert sqlite_file(settings) == tmp_path / "elsewhere.db"


async def test_a_ledger_it_cannot_reach_is_one_line_without_its_password(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, database_url="postgresql://u:pw-secret@127.0.0.1:1/v")
    ledger = build_ledger(settings)
    try:
        with pytest.raises(InvalidRequest) as caught:
            await open_ledger(ledger, settings)
    finally:
        await ledger.close()
    assert str(caught.value) == (
        "cannot open the ledger postgresql+asyncpg://u:***@127.0.0.1:1/v: Connection refused"
    )


async def test_a_web_app_setting_it_refuses_is_one_line(tmp_path: Path) -> None:
    from idds_vis.cli.web import start_web

    settings = Settings(state_dir=tmp_path, web_port=0, rate_limit="lots")
    agent = build_agent(settings)
    with pytest.raises(InvalidRequest) as caught:
        await start_web(settings, agent)
    assert str(caught.value).startswith("web app settings: rate_limit 'lots': ")


def test_the_cluster_credentials_must_be_there_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = {"deployer": "kubernetes", "state_dir": tmp_path}
    with pytest.raises(InvalidRequest, match=r"^setting kubeconfig: no such file /nope/kc$"):
        check_cluster_access(Settings(**kube, kubeconfig="/nope/kc"))  # type: ignore[arg-type]
    (tmp_path / "kc").write_text("apiVersion: v1\n")
    check_cluster_access(Settings(**kube, kubeconfig=str(tmp_path / "kc")))  # type: ignore[arg-type]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InvalidRequest, match="needs the service account of the pod"):
        check_cluster_access(Settings(**kube))  # type: ignore[arg-type]
    check_cluster_access(Settings(state_dir=tmp_path))  # the local deployer needs none
