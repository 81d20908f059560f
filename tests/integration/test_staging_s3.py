"""Staging from S3 through the real protocol: moto in server mode on loopback, IAM auth on."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from idds_vis.domain.errors import LimitExceeded, SourceUnreachable, StagingError, UnsafeArchive
from idds_vis.staging import MANIFEST, ArchiveStager
from idds_vis.staging.credentials import Credentials, S3Access, Secret
from tests.mlflow_data import (
    ARTIFACT_NAME,
    ARTIFACT_TEXT,
    EXPERIMENT,
    FILE_STORE_EXPERIMENTS,
    make_file_store,
    pack,
    sqlite_template,
)
from tests.moto_s3 import BUCKET, S3Server, run_s3_server

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """Auth off (see tests/moto_s3.py for why): trees, listings, caps."""
    yield from run_s3_server(strict=False)


@pytest.fixture(scope="module")
def s3_strict() -> Iterator[S3Server]:
    """IAM auth on: only the configured key gets in."""
    yield from run_s3_server(strict=True)


def access(server: S3Server, *, endpoint: str | None = None, secret: str | None = None,
           key_id: str | None = None) -> Credentials:  # fmt: skip
    return Credentials(s3=S3Access(
        endpoint_url=endpoint or server.endpoint, region="us-east-1",
        access_key_id=Secret(key_id or server.access_key_id),
        secret_access_key=Secret(secret or server.secret_access_key),
    ))  # fmt: skip


def stager(creds: Credentials, **caps: int) -> ArchiveStager:
    return ArchiveStager(credentials=lambda: creds, http_timeout=60, **caps)


def upload_tree(server: S3Server, root: Path, prefix: str) -> int:
    client = server.client()
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=BUCKET, Key=prefix + path.relative_to(root).as_posix(),
                              Body=path.read_bytes())  # fmt: skip
            count += 1
    return count


def left_beside(dest: Path) -> set[str]:
    return {p.name for p in dest.parent.iterdir()} - {dest.name}


def assert_no_secret(server: S3Server, text: str) -> None:
    assert server.secret_access_key not in text
    assert "wrong-secret" not in text


# --- what is staged ------------------------------------------------------------------------


async def test_a_single_archive_object_is_unpacked(s3_strict: S3Server, tmp_path: Path) -> None:
    job = tmp_path / "job"
    shutil.copytree(sqlite_template(), job)
    archive = pack(job, tmp_path / "metrics", "tar.gz", prefix="output")
    s3_strict.client().put_object(Bucket=BUCKET, Key="tasks/42/metrics", Body=archive.read_bytes())
    dest = tmp_path / "area" / "dest"

    staged = await stager(access(s3_strict)).stage(f"s3://{BUCKET}/tasks/42/metrics", dest)

    assert staged.layout == "sqlite"
    assert Path(staged.store_path) == dest / "output" / "mlflow.db"
    assert staged.experiments == ("Default", EXPERIMENT)
    assert (dest / MANIFEST).is_file()
    with closing(sqlite3.connect(staged.store_path)) as conn:
        (uri,) = conn.execute("SELECT artifact_uri FROM runs").fetchone()
    assert (Path(unquote(urlsplit(uri).path)) / ARTIFACT_NAME).read_text() == ARTIFACT_TEXT
    assert left_beside(dest) == set()  # the downloaded object is gone


@pytest.mark.parametrize("source_key", ["runs/7/", "runs/7"])
async def test_a_prefix_holding_an_mlruns_tree(
    s3: S3Server, tmp_path: Path, source_key: str
) -> None:
    mlruns = make_file_store(tmp_path / "job")
    uploaded = upload_tree(s3, mlruns.parent, "runs/7/")
    # A neighbour sharing the name's start must not be swept in with "runs/7".
    s3.client().put_object(Bucket=BUCKET, Key="runs/70/other.txt", Body=b"not this task")
    dest = tmp_path / "dest"

    staged = await stager(access(s3)).stage(f"s3://{BUCKET}/{source_key}", dest)

    assert staged.layout == "file-store"
    assert Path(staged.store_path) == dest / "mlruns"
    assert staged.experiments == FILE_STORE_EXPERIMENTS
    assert staged.files == uploaded
    assert not (dest / "other.txt").exists()


async def test_a_prefix_holding_mlflow_db_and_artifacts(s3: S3Server, tmp_path: Path) -> None:
    uploaded = upload_tree(s3, sqlite_template(), "sqlite/task-9/")
    dest = tmp_path / "dest"

    staged = await stager(access(s3)).stage(f"s3://{BUCKET}/sqlite/task-9/", dest)

    assert staged.layout == "sqlite"
    assert Path(staged.store_path) == dest / "mlflow.db"
    assert staged.files == uploaded
    with closing(sqlite3.connect(staged.store_path)) as conn:
        uris = [u for (u,) in conn.execute("SELECT artifact_uri FROM runs")]
    assert uris
    for uri in uris:
        path = Path(unquote(urlsplit(uri).path))
        assert path.is_relative_to(dest)
        assert (path / ARTIFACT_NAME).read_text() == ARTIFACT_TEXT


# --- caps -------------------------------------------------------------------------------------


async def test_a_prefix_over_the_file_cap_is_refused_from_its_listing(
    s3: S3Server, tmp_path: Path
) -> None:
    client = s3.client()
    for n in range(6):
        client.put_object(Bucket=BUCKET, Key=f"many/file-{n}.txt", Body=b"x")
    dest = tmp_path / "dest"
    with pytest.raises(
        LimitExceeded, match=f"s3://{BUCKET}/many/ holds 6 files, over the cap of 5"
    ):
        await stager(access(s3), max_files=5).stage(f"s3://{BUCKET}/many/", dest)
    assert not dest.exists()


async def test_an_object_over_the_byte_cap_is_refused_before_download(
    s3: S3Server, tmp_path: Path
) -> None:
    s3.client().put_object(Bucket=BUCKET, Key="big.tgz", Body=b"x" * 5000)
    with pytest.raises(LimitExceeded, match="5000 bytes, over the cap of 4000 bytes"):
        await stager(access(s3), max_bytes=4000).stage(f"s3://{BUCKET}/big.tgz", tmp_path / "d")
    assert left_beside(tmp_path / "d") == set()


class Liar:
    """A proxy in front of moto whose GET answers for ``liar/`` keys never end: the sizes S3
    lists are honest, the bytes sent are not, so only counting while receiving stops it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[int] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")}  # fmt: skip
        body = await request.read()
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body,
        ) as answer:  # fmt: skip
            data = await answer.read()
            lying = request.method == "GET" and "/liar/" in request.path
            hop = ("transfer-encoding", "connection", "content-length")
            keep = {k: v for k, v in answer.headers.items() if k.lower() not in hop}
            if request.method == "HEAD":
                keep["Content-Length"] = answer.headers.get("Content-Length", "0")
                return web.Response(status=answer.status, headers=keep)
            if not lying:
                return web.Response(status=answer.status, body=data, headers=keep)
            response = web.StreamResponse(status=answer.status, headers=keep)
            await response.prepare(request)
            sent = 0
            try:
                await response.write(data)
                for _ in range(100_000):
                    await response.write(b"z" * 1000)
                    sent += 1000
            except (ConnectionResetError, ConnectionError):
                pass
            finally:
                self.sent.append(sent)
            return response


@pytest.fixture
async def liar(s3: S3Server) -> AsyncIterator[tuple[Liar, str]]:
    proxy = Liar(s3.endpoint)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield proxy, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.parametrize("source_key", ["liar/one.tgz", "liar/"])
async def test_bytes_beyond_what_s3_listed_are_cut_off_while_downloading(
    s3: S3Server, liar: tuple[Liar, str], tmp_path: Path, source_key: str
) -> None:
    proxy, endpoint = liar
    s3.client().put_object(Bucket=BUCKET, Key="liar/one.tgz", Body=b"small")
    dest = tmp_path / "dest"
    with pytest.raises(LimitExceeded, match="cap of 100000 bytes"):
        await stager(access(s3, endpoint=endpoint), max_bytes=100_000).stage(
            f"s3://{BUCKET}/{source_key}", dest
        )
    # The proxy had 100 MB to send; the download was stopped soon after the cap.
    assert proxy.sent and proxy.sent[0] < 20_000_000
    assert not dest.exists() and left_beside(dest) == set()


# --- refusals and failures, with no secret anywhere -----------------------------------------


async def test_a_key_that_would_leave_the_directory_is_refused(
    s3: S3Server, tmp_path: Path
) -> None:
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="evil/mlruns/ok.txt", Body=b"fine")
    client.put_object(Bucket=BUCKET, Key="evil/../pwned.txt", Body=b"escape")
    dest = tmp_path / "area" / "dest"
    with pytest.raises(UnsafeArchive, match="leaves the staging directory"):
        await stager(access(s3)).stage(f"s3://{BUCKET}/evil/", dest)
    assert not list(tmp_path.rglob("pwned*"))
    assert not dest.exists()


def failure_cases(
    s3: S3Server, strict: S3Server
) -> list[tuple[str, Credentials, str, type[StagingError], str]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    strict.client().put_object(Bucket=BUCKET, Key="secret/task.tgz", Body=b"data")
    unknown = access(strict, key_id="AKIAUNKNOWN000000000", secret="wrong-secret")
    return [
        # HEAD answers carry no body, so a refused HEAD has only its status for a code.
        ("wrong secret key", access(strict, secret="wrong-secret"), f"s3://{BUCKET}/secret/task.tgz",
         SourceUnreachable, f"access denied (403) at s3://{BUCKET}/secret/task.tgz"),
        ("unknown key id", unknown, f"s3://{BUCKET}/secret/", SourceUnreachable,
         f"access denied (InvalidAccessKeyId) at s3://{BUCKET}/secret/"),
        ("no such bucket", access(s3), "s3://no-such-bucket/x/", SourceUnreachable,
         "no such bucket at s3://no-such-bucket/x/"),
        ("nothing there", access(s3), f"s3://{BUCKET}/nothing-here/", SourceUnreachable,
         f"no object or prefix s3://{BUCKET}/nothing-here/"),
        ("unreachable", access(s3, endpoint=closed), f"s3://{BUCKET}/x/", SourceUnreachable,
         f"cannot connect to {closed} for s3://{BUCKET}/x/"),
    ]  # fmt: skip


async def test_failures_name_bucket_key_and_cause_but_no_key_or_secret(
    s3: S3Server, s3_strict: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, creds, source, error, reason in failure_cases(s3, s3_strict):
        dest = tmp_path / name / "dest"
        with pytest.raises(error) as caught:
            await stager(creds).stage(source, dest)
        message = str(caught.value)
        assert reason in message, (name, message)
        for server in (s3, s3_strict):
            assert server.access_key_id not in message and "AKIAUNKNOWN" not in message, name
            assert_no_secret(server, message)
        assert not dest.exists(), name
    assert caplog.records, "botocore logged nothing at DEBUG: the check below would prove nothing"
    for server in (s3, s3_strict):
        for record in caplog.records:
            assert_no_secret(server, record.getMessage())
        assert_no_secret(server, caplog.text)


async def test_a_cancelled_prefix_download_leaves_nothing(
    s3: S3Server, liar: tuple[Liar, str], tmp_path: Path
) -> None:
    _proxy, endpoint = liar
    s3.client().put_object(Bucket=BUCKET, Key="liar/one.tgz", Body=b"small")
    dest = tmp_path / "dest"
    task = asyncio.create_task(
        stager(access(s3, endpoint=endpoint)).stage(f"s3://{BUCKET}/liar/", dest)
    )
    deadline = asyncio.get_running_loop().time() + 30

    def downloading() -> bool:  # a prefix is fetched into a work directory beside dest
        return any(f.stat().st_size >= 10_000 for f in tmp_path.glob(".idds-vis-s3-*/one.tgz"))

    while not downloading():
        assert asyncio.get_running_loop().time() < deadline, "the download never got going"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not dest.exists()
    assert left_beside(dest) == set()
