"""Credentials: read from files, carried to a UI pod as a Secret's values, never shown; bearer
tokens sent to the configured host only, over a real HTTP server on loopback."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from idds_vis.domain.errors import SourceUnreachable, StagingError
from idds_vis.runtime.config import load_settings
from idds_vis.runtime.wiring import credential_files
from idds_vis.staging import ArchiveStager
from idds_vis.staging.credentials import (
    CredentialFiles,
    Credentials,
    RucioAccess,
    S3Access,
    Secret,
    without_credentials,
)
from idds_vis.ui.serve import stage_source
from tests.mlflow_data import EXPERIMENT, pack, sqlite_template

TOKEN = "eyJhbGciOi.bigpanda-token-7f3a.sig"
S3_SECRET = "s3-secret-Zq8w"
PASSWORD = "rucio-pw-%-Kx1"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> CredentialFiles:
    return CredentialFiles(
        http_token_files={"BigPanDA.example.org": write(tmp_path / "bp.token", TOKEN + "\n")},
        s3_endpoint_url="https://s3.example.org",
        s3_region="eu-west-1",
        s3_access_key_file=write(tmp_path / "s3.id", "AKIAEXAMPLE\n"),
        s3_secret_key_file=write(tmp_path / "s3.secret", S3_SECRET),
        rucio_host="https://rucio.example.org",
        rucio_account="vis-robot",
        rucio_username="vis",
        rucio_password_file=write(tmp_path / "rucio.pw", PASSWORD + "\n"),
        rucio_rse="TYPE=DISK",
    )


# --- reading and showing -------------------------------------------------------------------


def test_secrets_are_read_from_files_and_never_shown(files: CredentialFiles) -> None:
    creds = files.load()
    assert creds.http_tokens["bigpanda.example.org"].reveal() == TOKEN  # host matched lowercased
    assert creds.s3 is not None and creds.s3.secret_access_key is not None
    assert creds.s3.secret_access_key.reveal() == S3_SECRET
    assert creds.rucio is not None and creds.rucio.auth_host == "https://rucio.example.org"
    shown = f"{creds!r} {creds} {creds.s3} {creds.rucio}"
    for secret in (TOKEN, S3_SECRET, PASSWORD, "AKIAEXAMPLE"):
        assert secret not in shown
    assert creds.scrub(f"x {TOKEN} y {PASSWORD}") == "x *** y ***"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"s3_secret_key_file": "/nonexistent/s3.secret"}, "cannot read the S3 secret key file"),
        ({"s3_access_key_file": None}, "both s3_access_key_file and s3_secret_key_file"),
        ({"rucio_auth_type": "kerberos"}, "rucio_auth_type 'kerberos' is not one of"),
        ({"rucio_account": None}, "Rucio needs rucio_host and rucio_account"),
    ],
)
def test_bad_credential_settings_are_named_without_content(
    files: CredentialFiles, change: dict[str, object], reason: str
) -> None:
    bad = CredentialFiles(**{**files.__dict__, **change})
    with pytest.raises(StagingError, match=reason) as caught:
        bad.load()
    assert S3_SECRET not in str(caught.value) and TOKEN not in str(caught.value)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = CredentialFiles(http_token_files={"h": write(tmp_path / "t", "\n")})
    with pytest.raises(StagingError, match=r"bearer token for h file .* is empty"):
        empty.load()


def test_a_token_is_for_its_host_and_never_sent_in_clear() -> None:
    creds = Credentials(http_tokens={"bigpanda.example.org": Secret(TOKEN),
                                     "127.0.0.1": Secret(TOKEN)})  # fmt: skip
    assert creds.http_token_for("https://bigpanda.example.org/idds/x?workloadid=1") is not None
    assert creds.http_token_for("https://other.example.org/x") is None
    assert creds.http_token_for("http://127.0.0.1:8000/x") is not None  # loopback: tests only
    with pytest.raises(StagingError, match="use https") as caught:
        creds.http_token_for("http://bigpanda.example.org/x")
    assert TOKEN not in str(caught.value)


# --- what a UI pod gets ----------------------------------------------------------------------


def test_pod_env_holds_exactly_what_the_source_needs(files: CredentialFiles) -> None:
    creds = files.load()
    http = creds.pod_env("https://bigpanda.example.org/idds/downloadhpometrics/?workloadid=7")
    assert http == {
        "IDDS_VIS_HTTP_TOKEN_HOST": "bigpanda.example.org",
        "IDDS_VIS_HTTP_TOKEN": TOKEN,
    }
    s3 = creds.pod_env("s3://bucket/tasks/7/")
    assert s3 == {
        "IDDS_VIS_S3_ENDPOINT_URL": "https://s3.example.org",
        "IDDS_VIS_S3_REGION": "eu-west-1",
        "IDDS_VIS_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "IDDS_VIS_S3_SECRET_ACCESS_KEY": S3_SECRET,
    }
    rucio = creds.pod_env("rucio://user.jdoe:user.jdoe.hpo.7_out/")
    assert rucio is not None
    assert rucio["IDDS_VIS_RUCIO_PASSWORD"] == PASSWORD
    assert rucio["IDDS_VIS_RUCIO_ACCOUNT"] == "vis-robot"
    assert not any(k.startswith(("IDDS_VIS_S3", "IDDS_VIS_HTTP")) for k in rucio)
    for needs_none in ("/data/task.tgz", "https://other.example.org/x.tgz", "file:///x"):
        assert creds.pod_env(needs_none) is None, needs_none
    assert Credentials().pod_env("s3://bucket/x") is None  # no S3 settings: anonymous, no Secret


def test_the_pod_reads_back_what_the_secret_carries(files: CredentialFiles) -> None:
    creds = files.load()
    env: dict[str, str] = {"PATH": "/usr/bin"}
    for source in ("https://bigpanda.example.org/x", "s3://b/k", "rucio://user.jdoe:d"):
        env.update(creds.pod_env(source) or {})
    back = Credentials.from_env(env)
    assert back.http_tokens == {"bigpanda.example.org": Secret(TOKEN)}
    assert back.s3 == creds.s3
    assert back.rucio == creds.rucio
    assert without_credentials(env) == {"PATH": "/usr/bin"}
    assert Credentials.from_env({"PATH": "/usr/bin"}) == Credentials()


def test_rucio_access_takes_contents_not_paths(tmp_path: Path, files: CredentialFiles) -> None:
    proxy = write(tmp_path / "x509up", "-----BEGIN CERTIFICATE-----\nproxy\n")
    ca = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\nca\n")
    loaded = (
        CredentialFiles(
            rucio_host="https://r",
            rucio_account="a",
            rucio_auth_type="x509_proxy",
            rucio_x509_proxy_file=proxy,
            rucio_ca_cert=ca,
        )
        .load()
        .rucio
    )
    assert loaded == RucioAccess(host="https://r", auth_host="https://r", account="a",
                                 auth_type="x509_proxy", x509_proxy=Secret(Path(proxy).read_text()),
                                 ca_cert=Path(ca).read_text())  # fmt: skip
    assert S3Access().signed is False


# --- bearer tokens over a real HTTP server ----------------------------------------------------


@dataclass
class Site:
    """A loopback HTTP server that serves the tarball only to the right bearer token."""

    body: bytes
    token: str
    seen: list[str | None] = field(default_factory=list)
    redirect_to: str | None = None
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.seen.append(self.headers.get("Authorization"))
                if site.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", site.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != f"Bearer {site.token}":
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(site.body)))
                self.end_headers()
                self.wfile.write(site.body)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    job = tmp_path / "job"
    shutil.copytree(sqlite_template(), job)
    body = pack(job, tmp_path / "metrics.tgz", "tar.gz", prefix="output").read_bytes()
    pair = (Site(body, TOKEN), Site(body, TOKEN))
    servers = []
    for site in pair:
        server = ThreadingHTTPServer(("127.0.0.1", 0), site.handler())
        site.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield pair
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def token_for(token: str = TOKEN) -> Credentials:
    # Both sites are on 127.0.0.1 (different ports, so different origins).
    return Credentials(http_tokens={"127.0.0.1": Secret(token)})


async def test_the_bearer_token_goes_to_its_host(sites: tuple[Site, Site], tmp_path: Path) -> None:
    site, _ = sites
    creds = token_for()
    url = f"{site.url}/idds/downloadhpometrics/?workloadid=42"
    staged = await ArchiveStager(credentials=lambda: creds).stage(url, tmp_path / "dest")
    assert staged.experiments == ("Default", EXPERIMENT)
    assert site.seen == [f"Bearer {TOKEN}"]


async def test_the_token_is_not_sent_on_to_another_origin(
    sites: tuple[Site, Site], tmp_path: Path
) -> None:
    first, second = sites
    first.redirect_to = f"{second.url}/elsewhere.tgz"
    creds = token_for()
    with pytest.raises(SourceUnreachable, match="HTTP 403"):
        await ArchiveStager(credentials=lambda: creds).stage(first.url + "/x", tmp_path / "d")
    assert first.seen == [f"Bearer {TOKEN}"]
    assert second.seen == [None]  # aiohttp dropped it at the cross-origin redirect


async def test_refusals_and_failures_never_show_the_token(
    sites: tuple[Site, Site], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site, _ = sites
    wrong = "wrong-token-value-1234"
    messages = []
    with pytest.raises(SourceUnreachable, match="HTTP 403 at") as caught:
        await ArchiveStager(credentials=lambda: token_for(wrong)).stage(
            f"{site.url}/x?workloadid=1&token={wrong}", tmp_path / "a"
        )
    messages.append(str(caught.value))
    site.token = "accept-nothing"
    with pytest.raises(SourceUnreachable, match="HTTP 403 at") as caught:
        await ArchiveStager(credentials=lambda: token_for()).stage(site.url, tmp_path / "b")
    messages.append(str(caught.value))
    closed = site.url.rsplit(":", 1)[0] + ":1"
    with pytest.raises(SourceUnreachable, match="cannot connect") as caught:
        await ArchiveStager(credentials=lambda: token_for()).stage(closed, tmp_path / "c")
    messages.append(str(caught.value))
    assert site.seen == [f"Bearer {wrong}", f"Bearer {TOKEN}"]  # both really sent
    texts = messages + [r.getMessage() for r in caplog.records] + [caplog.text]
    for text in texts:
        assert TOKEN not in text and wrong not in text


def test_serve_ui_stages_with_the_credentials_of_its_environment(
    sites: tuple[Site, Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, _ = sites
    monkeypatch.setenv("IDDS_VIS_HTTP_TOKEN_HOST", "127.0.0.1")
    monkeypatch.setenv("IDDS_VIS_HTTP_TOKEN", TOKEN)
    staged = stage_source(f"{site.url}/metrics", tmp_path, 1 << 30, 1000)
    assert staged.layout == "sqlite"
    assert site.seen == [f"Bearer {TOKEN}"]


def test_the_settings_file_names_the_credential_files(tmp_path: Path) -> None:
    token = write(tmp_path / "bp.token", TOKEN)
    config = tmp_path / "idds-vis.yaml"
    config.write_text(
        f"http_token_files:\n  bigpanda.example.org: {token}\n"
        "s3_endpoint_url: http://127.0.0.1:9000\n"
        "rucio_host: https://rucio.example.org\nrucio_account: vis-robot\n"
        "rucio_auth_type: oidc\n"
        f"rucio_token_file: {token}\n"
    )
    settings = load_settings(config)
    creds = credential_files(settings).load()
    assert creds.http_tokens == {"bigpanda.example.org": Secret(TOKEN)}
    assert creds.s3 == S3Access(endpoint_url="http://127.0.0.1:9000")
    assert creds.rucio is not None and creds.rucio.token == Secret(TOKEN)
    assert TOKEN not in repr(settings)  # settings hold file names, never the secrets
