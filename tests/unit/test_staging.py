"""ArchiveStager: real archives, directories and an HTTP server; every refusal leaves no trace."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import stat
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from idds_vis.domain.errors import (
    LimitExceeded,
    NoMlflowData,
    SourceUnreachable,
    StagingError,
    UnsafeArchive,
)
from idds_vis.domain.models import StagedArtefacts
from idds_vis.staging import (
    MANIFEST,
    ArchiveStager,
    NotAnArchive,
    UnsupportedSource,
    detect_layout,
    redact_url,
)
from tests.mlflow_data import (
    ARCHIVE_FORMATS,
    ARTIFACT_NAME,
    ARTIFACT_TEXT,
    EXPERIMENT,
    FILE_STORE_EXPERIMENTS,
    make_file_store,
    pack,
    sqlite_template,
)

pytestmark = pytest.mark.asyncio


# --- where things go: dest next to a sentinel that no archive may touch ---------------------


@dataclass
class Area:
    tmp: Path
    dest: Path
    sentinel: Path
    src: Path

    def snapshot(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.sentinel).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(self.sentinel.rglob("*"))
        }

    def assert_untouched(self, before: dict[str, bytes]) -> None:
        assert not self.dest.exists() or not any(self.dest.iterdir()), "dest left non-empty"
        assert self.snapshot() == before, "the sentinel next to dest changed"
        # No download left behind in dest's parent, nothing written beside it.
        assert {p.name for p in self.dest.parent.iterdir()} <= {"dest", "sentinel"}
        assert not [p for p in self.tmp.rglob("pwned*")], "an archive wrote outside dest"


@pytest.fixture
def area(tmp_path: Path) -> Area:
    sentinel = tmp_path / "area" / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "keep.txt").write_text("do not touch\n")
    src = tmp_path / "src"
    src.mkdir()
    return Area(tmp_path, tmp_path / "area" / "dest", sentinel, src)


async def refused(
    area: Area, source: str, error: type[StagingError], *needles: str, **caps: int
) -> str:
    before = area.snapshot()
    with pytest.raises(error) as caught:
        await ArchiveStager(**caps).stage(source, area.dest)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    area.assert_untouched(before)
    return message


def file_store_source(area: Area) -> Path:
    job = area.src / "job"
    make_file_store(job / "out")
    return job


def sqlite_source(area: Area) -> Path:
    job = area.src / "job"
    shutil.copytree(sqlite_template(), job)
    return job


def assert_manifest_matches(staged: StagedArtefacts) -> None:
    root = Path(staged.root)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["file_count"] == staged.files == len(manifest["files"])
    assert manifest["total_bytes"] == staged.bytes
    for rel, entry in manifest["files"].items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], rel
        assert len(data) == entry["bytes"]
    on_disk = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and ".idds-vis" not in p.parts
    }
    assert on_disk == set(manifest["files"])


def uri_path(uri: str) -> Path:
    assert uri.startswith("file:///"), uri
    return Path(unquote(urlsplit(uri).path))


# --- good sources ---------------------------------------------------------------------------


async def test_tar_gz_of_a_sqlite_store_is_staged_and_its_artifacts_found(area: Area) -> None:
    archive = pack(sqlite_source(area), area.src / "metrics.tgz", "tar.gz", prefix="output")
    shutil.rmtree(area.src / "job")  # the training machine's paths are gone from here on

    staged = await ArchiveStager().stage(str(archive), area.dest)

    assert staged.layout == "sqlite"
    assert Path(staged.store_path) == area.dest / "output" / "mlflow.db"
    assert staged.experiments == ("Default", EXPERIMENT)
    assert_manifest_matches(staged)
    assert stat.S_IMODE(area.dest.stat().st_mode) == 0o700
    with closing(sqlite3.connect(staged.store_path)) as conn:
        uris = [u for (u,) in conn.execute("SELECT artifact_uri FROM runs")]
    assert uris
    for uri in uris:
        path = uri_path(uri)
        assert path.is_relative_to(area.dest)
        assert (path / ARTIFACT_NAME).read_text() == ARTIFACT_TEXT


@pytest.mark.parametrize("fmt", ARCHIVE_FORMATS)
async def test_every_archive_format_is_recognised_by_content(area: Area, fmt: str) -> None:
    # BigPanDA's URL has no extension, so neither does this file.
    archive = pack(file_store_source(area), area.src / "downloadhpometrics", fmt)

    staged = await ArchiveStager().stage(str(archive), area.dest)

    assert staged.layout == "file-store"
    assert Path(staged.store_path) == area.dest / "out" / "mlruns"
    assert staged.experiments == FILE_STORE_EXPERIMENTS
    assert_manifest_matches(staged)


@pytest.mark.parametrize("as_uri", [False, True])
async def test_directory_is_copied_and_its_links_stay_inside(area: Area, as_uri: bool) -> None:
    job = file_store_source(area)
    (job / "latest").symlink_to("out/mlruns/1")
    (job / "absolute").symlink_to(job / "out" / "mlruns")
    source = job.as_uri() if as_uri else str(job)

    staged = await ArchiveStager().stage(source, area.dest)

    assert staged.layout == "file-store"
    assert staged.experiments == FILE_STORE_EXPERIMENTS
    assert not area.dest.is_symlink()
    assert os.readlink(area.dest / "latest") == "out/mlruns/1"
    # An absolute link into the source would point back at it: it is re-aimed relatively.
    assert os.readlink(area.dest / "absolute") == "out/mlruns"
    copied = area.dest / "out" / "mlruns" / "0" / "meta.yaml"
    assert copied.stat().st_ino != (job / "out" / "mlruns" / "0" / "meta.yaml").stat().st_ino
    assert_manifest_matches(staged)


async def test_zip_symlink_to_a_file_inside_becomes_a_link(area: Area) -> None:
    archive = pack(file_store_source(area), area.src / "a.zip", "zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("latest.yaml")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "./out//mlruns/1/meta.yaml")

    staged = await ArchiveStager().stage(str(archive), area.dest)

    # Kept, re-aimed at the resolved target, and listed (not hashed) by the manifest.
    assert os.readlink(area.dest / "latest.yaml") == "out/mlruns/1/meta.yaml"
    assert "name: hpo-scan" in (area.dest / "latest.yaml").read_text()
    manifest = json.loads((area.dest / MANIFEST).read_text())
    assert manifest["links"] == {"latest.yaml": "out/mlruns/1/meta.yaml"}
    assert_manifest_matches(staged)


@pytest.mark.parametrize("fmt", ["tar", "zip"])
async def test_symlink_to_a_directory_is_refused(area: Area, fmt: str) -> None:
    # Only links to regular files are kept: a directory link is what a write goes through.
    if fmt == "tar":
        archive = evil_tar(area.src / "a.tgz", ("latest", tarfile.SYMTYPE, "mlruns/0"))
    else:
        archive = evil_zip(area.src / "a.zip", ("latest", stat.S_IFLNK | 0o777, b"mlruns/0"))
    await refused(
        area,
        str(archive),
        UnsafeArchive,
        "'latest' is a symlink to 'mlruns/0', a directory; only links to regular files",
    )


async def test_staging_again_replaces_a_read_only_earlier_attempt(area: Area) -> None:
    old = area.dest / "old" / "mlruns"
    old.mkdir(parents=True)
    (old / "stale.txt").write_text("from an earlier attempt")
    old.chmod(0o500)
    archive = pack(file_store_source(area), area.src / "a.tar", "tar")

    staged = await ArchiveStager().stage(str(archive), area.dest)

    assert not (area.dest / "old").exists()
    assert staged.experiments == FILE_STORE_EXPERIMENTS


# --- layout detection -----------------------------------------------------------------------


async def test_layout_prefers_sqlite_and_finds_unnamed_stores(area: Area) -> None:
    root = area.dest
    make_file_store(root / "a")
    (root / "a" / "mlruns").rename(root / "a" / "task-123")  # a file store not named mlruns
    found = detect_layout(root)
    assert (found.layout, found.store_path) == ("file-store", root / "a" / "task-123")
    assert found.experiments == FILE_STORE_EXPERIMENTS

    (root / "b").mkdir()
    with closing(sqlite3.connect(root / "b" / "c.db")) as conn:
        conn.execute("CREATE TABLE cache (k TEXT)")  # SQLite, but not MLflow's
    assert detect_layout(root).layout == "file-store"

    with closing(sqlite3.connect(root / "b" / "tracking.db")) as conn, conn:
        conn.execute("CREATE TABLE experiments (name TEXT, lifecycle_stage TEXT)")
        conn.executemany(
            "INSERT INTO experiments VALUES (?, ?)",
            [("kept", "active"), ("gone", "deleted"), ("also", "active")],
        )
    found = detect_layout(root)
    assert (found.layout, found.store_path) == ("sqlite", root / "b" / "tracking.db")
    assert found.experiments == ("also", "kept")


async def test_layout_search_stops_at_depth_four(area: Area) -> None:
    make_file_store(area.dest / "1" / "2" / "3")  # mlruns at depth 4
    assert detect_layout(area.dest).store_path == area.dest / "1" / "2" / "3" / "mlruns"
    deeper = area.tmp / "deeper"
    make_file_store(deeper / "1" / "2" / "3" / "4")  # mlruns at depth 5
    with pytest.raises(NoMlflowData, match=r"expected an mlruns directory or an mlflow\.db"):
        detect_layout(deeper)


# --- refused sources ------------------------------------------------------------------------


async def test_missing_path(area: Area) -> None:
    missing = area.src / "nowhere.tgz"
    await refused(area, str(missing), SourceUnreachable, "unreachable", str(missing))


async def test_random_bytes_are_not_an_archive(area: Area) -> None:
    junk = area.src / "junk.tar.gz"
    junk.write_bytes(os.urandom(4096))
    await refused(area, str(junk), NotAnArchive, "neither a directory nor a tar or zip", "junk")


async def test_unknown_scheme(area: Area) -> None:
    await refused(area, "ftp://host/x.tgz", UnsupportedSource, "unsupported", "'ftp'")


async def test_archive_without_mlflow_data(area: Area) -> None:
    (area.src / "job").mkdir()
    (area.src / "job" / "readme.txt").write_text("no tracking data here")
    archive = pack(area.src / "job", area.src / "a.tgz", "tar.gz")
    message = await refused(area, str(archive), NoMlflowData, "no MLflow data in", "a.tgz")
    assert "expected an mlruns directory or an mlflow.db" in message


def evil_tar(path: Path, *members: tuple[str, bytes, bytes | str | None]) -> Path:
    """Members as (name, type, data or link target), after one legitimate mlruns file."""
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("mlruns/0/meta.yaml")
        body = b"experiment_id: '0'\nname: Default\n"
        ok.size = len(body)
        tar.addfile(ok, io.BytesIO(body))
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = str(payload or "")
                tar.addfile(info)
    return path


def evil_zip(path: Path, *members: tuple[str, int, bytes]) -> Path:
    """Members as (name, unix mode, data), after one legitimate mlruns file."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mlruns/0/meta.yaml", "experiment_id: '0'\nname: Default\n")
        for name, mode, data in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


async def test_tar_dotdot_entry(area: Area) -> None:
    archive = evil_tar(area.src / "a.tgz", ("../sentinel/pwned", tarfile.REGTYPE, b"x"))
    await refused(
        area, str(archive), UnsafeArchive, "'../sentinel/pwned' leaves the staging directory"
    )


async def test_zip_dotdot_entry(area: Area) -> None:
    archive = evil_zip(area.src / "a.zip", ("../sentinel/pwned", stat.S_IFREG | 0o644, b"x"))
    await refused(
        area, str(archive), UnsafeArchive, "'../sentinel/pwned' leaves the staging directory"
    )


async def test_tar_absolute_entry(area: Area) -> None:
    target = str(area.sentinel / "pwned")
    archive = evil_tar(area.src / "a.tgz", (target, tarfile.REGTYPE, b"x"))
    await refused(area, str(archive), UnsafeArchive, f"'{target}' has an absolute path")


async def test_zip_absolute_entry(area: Area) -> None:
    target = str(area.sentinel / "pwned")
    archive = evil_zip(area.src / "a.zip", (target, stat.S_IFREG | 0o644, b"x"))
    await refused(area, str(archive), UnsafeArchive, "has an absolute path")


async def test_tar_symlink_pointing_out(area: Area) -> None:
    archive = evil_tar(
        area.src / "a.tgz",
        ("escape", tarfile.SYMTYPE, "../sentinel"),
        ("escape/pwned", tarfile.REGTYPE, b"x"),
    )
    await refused(
        area, str(archive), UnsafeArchive, "'escape/pwned' lies under 'escape', which is a symlink"
    )


async def test_tar_absolute_symlink(area: Area) -> None:
    archive = evil_tar(area.src / "a.tgz", ("escape", tarfile.SYMTYPE, str(area.sentinel)))
    await refused(area, str(archive), UnsafeArchive, "'escape' is a symlink", "outside")


async def test_tar_link_chain_is_refused_before_anything_is_written(area: Area) -> None:
    # Lexically 'a/b/up/../..' is 'a', inside; on disk a/b/up is a, so it is dest's parent.
    archive = evil_tar(
        area.src / "a.tgz",
        ("a/b/f", tarfile.REGTYPE, b"x"),
        ("a/b/up", tarfile.SYMTYPE, "b/f"),
        ("chain", tarfile.SYMTYPE, "a/b/up/../.."),
    )
    await refused(area, str(archive), UnsafeArchive, "'a/b/up' is a symlink to 'b/f', which")
    archive = evil_tar(
        area.src / "b.tgz",
        ("a/b/f", tarfile.REGTYPE, b"x"),
        ("a/b/up", tarfile.SYMTYPE, "f"),
        ("chain", tarfile.SYMTYPE, "a/b/up/../f"),
    )
    await refused(area, str(archive), UnsafeArchive, "'chain'", "through 'a/b/up', a symlink")


async def test_tar_links_to_files_are_made_last_and_kept(area: Area) -> None:
    # The links come first in the archive, before their targets exist.
    archive = evil_tar(
        area.src / "a.tgz",
        ("mlruns/0/latest.txt", tarfile.SYMTYPE, "../1/notes.txt"),
        ("mlruns/copy.txt", tarfile.LNKTYPE, "mlruns/1/notes.txt"),
        ("mlruns/1/notes.txt", tarfile.REGTYPE, b"loss went down\n"),
    )

    staged = await ArchiveStager().stage(str(archive), area.dest)

    assert os.readlink(area.dest / "mlruns/0/latest.txt") == "../1/notes.txt"
    assert (area.dest / "mlruns/0/latest.txt").read_text() == "loss went down\n"
    copy = area.dest / "mlruns/copy.txt"
    assert not copy.is_symlink() and copy.read_text() == "loss went down\n"
    assert_manifest_matches(staged)


async def test_tar_hard_link_pointing_out(area: Area) -> None:
    archive = evil_tar(area.src / "a.tgz", ("pwned", tarfile.LNKTYPE, "../sentinel/keep.txt"))
    await refused(area, str(archive), UnsafeArchive, "'pwned' is a hard link", "outside")


async def test_tar_device_and_fifo(area: Area) -> None:
    for kind in (tarfile.CHRTYPE, tarfile.FIFOTYPE):
        archive = evil_tar(area.src / f"{kind!r}.tgz", ("dev", kind, None))
        await refused(area, str(archive), UnsafeArchive, "'dev' is a device or fifo")


async def test_zip_symlink_pointing_out(area: Area) -> None:
    archive = evil_zip(
        area.src / "a.zip",
        ("escape", stat.S_IFLNK | 0o777, b"../sentinel"),
        ("mlruns/1/meta.yaml", stat.S_IFREG | 0o644, b"experiment_id: '1'\nname: x\n"),
    )
    await refused(area, str(archive), UnsafeArchive, "'escape' is a symlink to '../sentinel'")


async def test_directory_symlink_pointing_out(area: Area) -> None:
    job = file_store_source(area)
    (job / "escape").symlink_to(area.sentinel)
    await refused(area, str(job), UnsafeArchive, "symlink 'escape'", "points outside")
    assert (job / "escape").is_symlink()  # the source itself is never changed


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
async def test_over_the_byte_cap(area: Area, fmt: str) -> None:
    job = file_store_source(area)
    (job / "big.bin").write_bytes(b"\0" * 5000)
    archive = pack(job, area.src / "a", fmt)
    await refused(
        area,
        str(archive),
        LimitExceeded,
        "archive holds",
        "over the cap of 4000 bytes",
        max_bytes=4000,
    )


@pytest.mark.parametrize("fmt", ["tar", "zip"])
async def test_over_the_file_count_cap(area: Area, fmt: str) -> None:
    job = area.src / "job"
    job.mkdir()
    for i in range(6):
        (job / f"f{i}").write_text(str(i))
    archive = pack(job, area.src / "a", fmt)
    await refused(
        area,
        str(archive),
        LimitExceeded,
        "archive holds 6 files, over the cap of 5",
        max_files=5,
    )


async def test_directory_over_the_file_count_cap(area: Area) -> None:
    job = area.src / "job"
    job.mkdir()
    for i in range(6):
        (job / f"f{i}").write_text(str(i))
    await refused(
        area,
        str(job),
        LimitExceeded,
        "source directory holds 6 files, over the cap of 5",
        max_files=5,
    )


# --- over HTTP ------------------------------------------------------------------------------


@dataclass
class Http:
    url: Callable[[str], str]
    entered: asyncio.Event
    streamed: list[int]


@pytest_asyncio.fixture
async def http(area: Area) -> AsyncIterator[Http]:
    tarball = pack(sqlite_source(area), area.src / "served.tgz", "tar.gz", prefix="output")
    body = tarball.read_bytes()
    entered = asyncio.Event()
    streamed: list[int] = []

    async def metrics(request: web.Request) -> web.Response:
        assert request.query["workloadid"] == "42"
        return web.Response(body=body, content_type="application/x-gzip")

    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await response.prepare(request)
        sent = 0
        try:
            for _ in range(10_000):
                await response.write(b"y" * 1000)
                sent += 1000
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            streamed.append(sent)
        return response

    async def hang(_request: web.Request) -> web.Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/idds/downloadhpometrics/", metrics)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_get("/hang", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Http(lambda path: str(server.make_url(path)), entered, streamed)
    finally:
        await server.close()


async def test_http_tarball_without_extension(area: Area, http: Http) -> None:
    url = http.url("/idds/downloadhpometrics/?workloadid=42")
    staged = await ArchiveStager().stage(url, area.dest)
    assert staged.layout == "sqlite"
    assert staged.experiments == ("Default", EXPERIMENT)
    assert_manifest_matches(staged)
    assert {p.name for p in area.dest.parent.iterdir()} == {"dest", "sentinel"}


async def test_http_404_names_status_and_url(area: Area, http: Http) -> None:
    url = http.url("/nope")
    await refused(area, url, SourceUnreachable, f"HTTP 404 at {url}")


async def test_http_error_hides_credentials_and_query_secrets(area: Area, http: Http) -> None:
    url = http.url("/nope?workloadid=42&token=s3cr3t-value")
    with_user = url.replace("http://", "http://alice:hunter2@")
    message = await refused(area, with_user, SourceUnreachable, "HTTP 404", "workloadid=42")
    for secret in ("s3cr3t", "hunter2", "alice"):
        assert secret not in message


async def test_http_content_length_over_cap(area: Area, http: Http) -> None:
    await refused(
        area,
        http.url("/big"),
        LimitExceeded,
        "5000 bytes (Content-Length)",
        "over the cap of 4000 bytes",
        max_bytes=4000,
    )


async def test_http_stream_over_cap_is_cut_off(area: Area, http: Http) -> None:
    await refused(
        area, http.url("/endless"), LimitExceeded, "passed the cap of 4000 bytes", max_bytes=4000
    )
    # The server stopped long before its 10 MB: the download was aborted, not read to the end.
    assert http.streamed and http.streamed[0] < 10_000_000


async def test_http_connection_refused(area: Area) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.tgz"
    await refused(area, url, SourceUnreachable, "unreachable", "cannot connect", url)


async def test_cancelled_download_leaves_nothing(area: Area, http: Http) -> None:
    before = area.snapshot()
    task = asyncio.create_task(ArchiveStager().stage(http.url("/hang"), area.dest))
    await http.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    area.assert_untouched(before)


async def test_redact_url_keeps_ids_and_drops_secrets() -> None:
    shown = redact_url("https://bob:pw@bigpanda.cern.ch:8443/p/?workloadid=7&token=abc&x=y#frag")
    assert shown == "https://bigpanda.cern.ch:8443/p/?workloadid=7&token=***&x=***"


async def test_zip_whose_headers_understate_a_size_is_refused(area: Area) -> None:
    archive = evil_zip(area.src / "a.zip", ("mlruns/big.bin", stat.S_IFREG | 0o644, b"z" * 5000))
    data = bytearray(archive.read_bytes())
    # Claim 100 bytes in both the local header and the central directory entry of big.bin.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.rfind(signature)
        data[at + offset : at + offset + 4] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("mlruns/big.bin").file_size == 100
    await refused(area, str(archive), NotAnArchive, "corrupt", max_bytes=4000)
