"""Staging from Rucio with rucio-clients' real Client and DownloadClient, in their own process,
against a loopback stand-in for the Rucio server (tests/rucio_server.py); only the storage
protocol's byte transfer is replaced (tests/rucio_transfer.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from aiohttp.test_utils import TestServer

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError, UnsafeArchive
from idds_vis.staging import ArchiveStager
from idds_vis.staging.credentials import Credentials, RucioAccess, Secret
from tests.mlflow_data import (
    EXPERIMENT,
    FILE_STORE_EXPERIMENTS,
    make_file_store,
    pack,
    sqlite_template,
)
from tests.rucio_server import RucioWorld, start

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
CONTAINER = "user.jdoe.hpo.42_out"
ARCHIVE = "user.jdoe.42._000001.metrics.tgz"
LOG = "user.jdoe.42._000002.log.txt"


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RucioWorld]:
    # The child process imports the replaced protocol class from this checkout's tests package.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    world = RucioWorld()
    job = tmp_path / "training"
    shutil.copytree(sqlite_template(), job)
    tarball = pack(job, tmp_path / "metrics.tgz", "tar.gz", prefix="output").read_bytes()
    mlruns = make_file_store(tmp_path / "hpo")
    single = pack(mlruns.parent, tmp_path / "single.tgz", "tar.gz").read_bytes()
    ds1 = world.add_collection("DATASET", "user.jdoe", f"{CONTAINER}.000001",
                               [world.add_file("user.jdoe", ARCHIVE, tarball)])  # fmt: skip
    ds2 = world.add_collection("DATASET", "user.jdoe", f"{CONTAINER}.000002",
                               [world.add_file("user.jdoe", LOG, b"epoch 3 done\n")])  # fmt: skip
    world.add_collection("CONTAINER", "user.jdoe", CONTAINER, [ds1, ds2])
    world.add_file("user.jdoe", "user.jdoe.42.single.tgz", single)
    server: TestServer = await start(world)
    try:
        yield world
    finally:
        await server.close()


def userpass(world: RucioWorld, password: str | None = None, **changes: object) -> Credentials:
    secret = Secret(password or world.password)
    access = RucioAccess(host=world.base, auth_host=world.base, account=world.account,
                         username=world.username, password=secret)  # fmt: skip
    for name, value in changes.items():
        object.__setattr__(access, name, value)
    return Credentials(rucio=access)


def stager(creds: Credentials, **caps: int) -> ArchiveStager:
    return ArchiveStager(credentials=lambda: creds, http_timeout=120, **caps)


def beside(dest: Path) -> set[str]:
    return {p.name for p in dest.parent.iterdir()} - {dest.name}


# --- what is staged ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", [f"rucio://user.jdoe:{CONTAINER}/", f"rucio://{CONTAINER}/"])
async def test_a_container_stages_every_file_in_rucio_layout(
    world: RucioWorld, tmp_path: Path, source: str
) -> None:
    dest = tmp_path / "area" / "dest"

    staged = await stager(userpass(world)).stage(source, dest)

    # DownloadClient's layout: <base>/<the DID asked for>/<file>; archives unpacked beside.
    assert (dest / CONTAINER / LOG).read_text() == "epoch 3 done\n"
    assert not (dest / CONTAINER / ARCHIVE).exists()
    assert staged.layout == "sqlite"
    assert (
        Path(staged.store_path)
        == dest / CONTAINER / "user.jdoe.42._000001.metrics" / "output" / "mlflow.db"
    )
    assert staged.experiments == ("Default", EXPERIMENT)
    assert sorted(world.storage_gets) == [f"user.jdoe:{ARCHIVE}", f"user.jdoe:{LOG}"]
    # Our settings reached the server: the account, and the password exactly once.
    assert world.accounts_seen == {world.account}
    assert world.passwords_seen == [world.password]
    assert beside(dest) == set()  # the private download directory is gone


async def test_a_file_did_is_downloaded_under_its_scope(world: RucioWorld, tmp_path: Path) -> None:
    dest = tmp_path / "area" / "dest"
    staged = await stager(userpass(world)).stage("rucio:user.jdoe:user.jdoe.42.single.tgz", dest)
    assert staged.layout == "file-store"
    assert Path(staged.store_path) == dest / "user.jdoe" / "user.jdoe.42.single" / "mlruns"
    assert staged.experiments == FILE_STORE_EXPERIMENTS


async def test_a_bearer_token_from_a_file_authenticates(world: RucioWorld, tmp_path: Path) -> None:
    creds = userpass(world, auth_type="oidc", username=None, password=None,
                     token=Secret(world.bearer))  # fmt: skip
    staged = await stager(creds).stage(f"rucio://user.jdoe:{CONTAINER}", tmp_path / "area" / "dest")
    assert staged.experiments == ("Default", EXPERIMENT)
    assert world.passwords_seen == []


# --- refusals and failures -----------------------------------------------------------------------


async def test_over_the_file_cap_is_refused_before_any_transfer(
    world: RucioWorld, tmp_path: Path
) -> None:
    with pytest.raises(
        LimitExceeded, match=f"user.jdoe:{CONTAINER} holds 2 files, over the cap of 1"
    ):
        await stager(userpass(world), max_files=1).stage(
            f"rucio://user.jdoe:{CONTAINER}", tmp_path / "d"
        )
    assert world.storage_gets == []


async def test_a_replica_bigger_than_its_catalogue_entry_is_cut_off(
    world: RucioWorld, tmp_path: Path
) -> None:
    world.add_file("user.jdoe", "user.jdoe.42.liar.tgz", b"tiny", endless=True)
    dest = tmp_path / "area" / "dest"
    with pytest.raises(LimitExceeded, match="passed the cap of 1000000 bytes; stopped"):
        await stager(userpass(world), max_bytes=1_000_000).stage(
            "rucio://user.jdoe:user.jdoe.42.liar.tgz", dest
        )
    assert world.storage_gets == ["user.jdoe:user.jdoe.42.liar.tgz"]
    # 200 MB were on offer; the child was killed soon after the cap.
    deadline = asyncio.get_running_loop().time() + 30
    while not world.storage_sent:
        assert asyncio.get_running_loop().time() < deadline, "the storage never saw the hang-up"
        await asyncio.sleep(0.05)
    assert world.storage_sent[0] < 100_000_000
    assert not dest.exists() and beside(dest) == set()


async def test_a_catalogue_name_leaving_the_directory_is_refused(
    world: RucioWorld, tmp_path: Path
) -> None:
    evil = world.add_file("user.jdoe", "../../pwned.txt", b"x")
    world.add_collection("DATASET", "user.jdoe", "user.jdoe.evil", [evil])
    with pytest.raises(UnsafeArchive, match=re.escape("lists a file named '../../pwned.txt'")):
        await stager(userpass(world)).stage(
            "rucio://user.jdoe:user.jdoe.evil", tmp_path / "area" / "d"
        )
    assert world.storage_gets == []
    assert not list(tmp_path.rglob("pwned*"))


async def test_failures_are_readable_and_never_show_a_secret(
    world: RucioWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    wrong = "not-the-password-8d1f"
    wrong_token = "eyJ3cm9uZyI.eyJ0b2tlbiI.c2ln"
    cases: list[tuple[Credentials, str, type[StagingError], str]] = [
        (userpass(world, wrong), f"rucio://user.jdoe:{CONTAINER}", SourceUnreachable,
         f"artefact source unreachable: Rucio at {world.base} refused account {world.account}"),
        (userpass(world, auth_type="oidc", token=Secret(wrong_token)), f"rucio://user.jdoe:{CONTAINER}",
         SourceUnreachable, f"refused account {world.account}"),
        (userpass(world), "rucio://user.jdoe:user.jdoe.nothing", SourceUnreachable,
         "artefact source unreachable: no such Rucio DID user.jdoe:user.jdoe.nothing"),
        (userpass(world, host=closed, auth_host=closed), f"rucio://user.jdoe:{CONTAINER}",
         SourceUnreachable, f"cannot connect to Rucio at {closed}"),
        (Credentials(), f"rucio://user.jdoe:{CONTAINER}", StagingError, "no Rucio settings"),
    ]  # fmt: skip
    messages = []
    for n, (creds, source, error, reason) in enumerate(cases):
        dest = tmp_path / "area" / str(n) / "dest"
        with pytest.raises(error) as caught:
            await stager(creds).stage(source, dest)
        messages.append(str(caught.value))
        assert reason in messages[-1], messages[-1]
        assert not dest.exists() and beside(dest) == set()
    assert wrong in world.passwords_seen  # the wrong password really went to the server
    assert world.storage_gets == []
    for text in messages + [r.getMessage() for r in caplog.records] + [caplog.text]:
        for secret in (wrong, wrong_token, world.password, world.bearer):
            assert secret not in text


async def test_cancelling_stops_the_download_process_and_leaves_nothing(
    world: RucioWorld, tmp_path: Path
) -> None:
    world.add_file("user.jdoe", "user.jdoe.42.slow.tgz", b"tiny", endless=True)
    dest = tmp_path / "area" / "dest"
    task = asyncio.create_task(
        stager(userpass(world)).stage("rucio://user.jdoe:user.jdoe.42.slow.tgz", dest)
    )
    deadline = asyncio.get_running_loop().time() + 60
    while not world.storage_gets:
        assert asyncio.get_running_loop().time() < deadline, "the transfer never started"
        await asyncio.sleep(0.05)
    assert _download_children(), "no download process while a transfer runs"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _download_children() == []
    assert not dest.exists() and beside(dest) == set()


def _download_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "idds_vis.staging.rucio_child" in child.cmdline() and child.status() != "zombie":
                found.append(child)
        except psutil.Error:
            continue
    return found
