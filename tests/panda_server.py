"""A real panda-server (from PyPI) on loopback for the integration tests, and JEDI emulated in SQL.

What runs (on 127.0.0.1, started and stopped by the ``panda_server`` session fixture):

- PostgreSQL: a database of its own on the session's throwaway server (``pg_server``), one
  schema holding the tables of ``tests/panda_ddl.sql`` (the ones the task endpoints touch; the
  panda-database schema is not on PyPI and is not copied).
- panda-server's WSGI application (``pandaserver.server.panda``) under waitress, through the
  shim ``tests/panda_wsgi.py`` (what Apache + mod_wsgi would supply). One process, no children:
  ``usedbtimeout = False`` keeps its database connection in-process (with it, panda-server's
  ConBridge forks a child per connection).
- Authentication as in production with tokens: ``token_authType = oidc``. A test identity
  provider (``TestIdentityProvider``: an RSA key, its JWKS and discovery document served by the
  shim under ``/oidc/``, an ``<vo>_auth_config.json`` naming them) signs ID tokens; the server
  verifies each one against the JWKS it fetches, as it does with a real provider, and takes the
  user name from the token's ``name`` claim. Clients use panda-client's own OIDC settings.

JEDI is not run: ``finish_task`` writes the rows JEDI would have written for a finished task
(``jedi_tasks``, ``jedi_taskparams``, its datasets and their files). ``submit_task`` goes through
the real panda-client (``Client.insertTaskParams``) in a process of its own, configured only by
its environment, as an author's script would be.

panda-server 1.0.4 depends on half the grid stack (rucio-clients, idds-*, snakemake, polars, and
mod_wsgi, which needs Apache's headers to build), with pins that clash with ours, so it runs
from a virtualenv of its own built once under ``~/.cache/idds-vis-tests/`` (``$XDG_CACHE_HOME``
if set): ``panda-server`` without its declared dependencies, then exactly the packages its import
needs (``VENV_PINS``, mod_wsgi not among them). Its wheel build hook chowns directories to user
``atlpan`` when run with group id 0, so as root the install runs with another group id.
``python -m tests.panda_server`` builds the venv ahead of the tests (``tests/run.sh`` does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import URL, make_url

from idds_vis.lookup import PandaSettings
from tests import venvs

TESTS_DIR = Path(__file__).resolve().parent
DDL = TESTS_DIR / "panda_ddl.sql"
PANDA_SERVER_VERSION = "1.0.4"
# What `import pandaserver.server.panda` needs in 1.0.4, found by importing it until it stops
# failing, pinned exactly (the venv's directory name is a hash of these and the Python version).
VENV_PINS = (
    "panda-common==0.1.11",
    "panda-client-light==2.2.0",
    "psycopg2-binary==2.9.13",
    "waitress==3.0.2",
    "rucio-clients==41.5.1", "rucio-clients-atlas==0.0.6",
    "idds-common==2.6.21", "idds-client==2.6.21", "idds-workflow==2.6.21", "idds-atlas==2.6.21",
    "snakemake==9.27.1", "polars==2.1.0", "polars-runtime-32==2.1.0", "numpy==2.4.6",
    "ruamel.yaml==0.19.1", "PyJWT==2.15.1", "cryptography==50.0.2", "Werkzeug==3.1.9",
    "requests==2.34.2", "stomp.py==9.0.0", "PyYAML==6.0.3", "psutil==7.2.2", "packaging==25.0",
    # The rest of their dependencies (installed with --no-deps, so every one is listed).
    "annotated-doc==0.0.7", "annotated-types==0.8.0", "anyio==4.16.0", "anytree==2.13.0",
    "argcomplete==3.7.2", "argparse-dataclass==2.0.0", "attrs==26.1.0", "certifi==2026.10.18",
    "cffi==2.1.1", "charset-normalizer==3.5.2", "click==8.5.1", "conda-inject==1.3.2",
    "ConfigArgParse==1.9.0", "connection_pool==0.0.3", "decorator==5.3.1", "docopt-ng==0.9.0",
    "docutils==0.22.4", "dogpile.cache==1.5.0", "dpath==2.2.0", "fastjsonschema==2.22.3",
    "gitdb==4.0.12", "GitPython==3.2.1", "greenlet==3.5.6", "h11==0.16.0", "httpcore==1.0.9",
    "httpx==0.28.1", "humanfriendly==10.0", "idna==3.20", "immutables==0.21", "Jinja2==3.1.6",
    "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1", "jupyter_core==5.9.1",
    "markdown-it-py==4.3.0", "MarkupSafe==3.0.4", "mdurl==0.1.2", "nbformat==5.11.1",
    "networkx==3.6.1", "platformdirs==4.14.7", "PuLP==3.3.2", "pycparser==3.12",
    "pydantic==2.14.3", "pydantic_core==2.50.4", "Pygments==2.21.0", "pytz==2026.6",
    "referencing==0.37.0", "rich==15.0.0", "rpds-py==2026.9.1", "shellingham==1.5.4",
    "smart_open==7.7.1", "smmap==5.0.3", "snakemake-interface-common==1.23.0",
    "snakemake-interface-executor-plugins==9.4.0", "snakemake-interface-logger-plugins==2.1.0",
    "snakemake-interface-report-plugins==1.3.0", "snakemake-interface-scheduler-plugins==2.0.2",
    "snakemake-interface-storage-plugins==4.4.1", "SQLAlchemy==2.0.58", "sqlmodel==0.0.37",
    "stevedore==5.10.0", "tabulate==0.10.0", "tenacity==9.2.1", "throttler==1.2.3",
    "traitlets==5.16.1", "typer==0.29.2", "typing-inspection==0.4.5", "typing_extensions==4.16.0",
    "urllib3==2.8.0", "websocket-client==1.9.2", "wrapt==2.5.2", "yte==1.9.4",
)  # fmt: skip
SCHEMA = "doma_panda"
VO = "atlas"
CLIENT_ID = "idds-vis-test"
# Users: nickname -> the name their token carries (panda-server's userName for them).
AUTHOR = "jdoe"
AGENT = "vis-agent"
USERS = {AUTHOR: "Joe Doe", AGENT: "Vis Agent"}
START_TIMEOUT = 180.0  # a cold import of panda-server on a loaded 2-core machine
STOP_TIMEOUT = 20.0
CALL_TIMEOUT = 60.0
_START_ATTEMPTS = 3  # a port taken between our probe and waitress's bind: try another


# -- the server's virtualenv ------------------------------------------------------------------
def venv_dir() -> Path:
    return venvs.venv_dir("panda-server-venv", [PANDA_SERVER_VERSION, VENV_PINS])


def _non_root_group() -> int | None:
    """A group id other than 0 to build panda-server's wheel with (None: we are not gid 0)."""
    if os.getgid() != 0:
        return None
    for name in ("nogroup", "nobody", "users"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return next(g.gr_gid for g in grp.getgrall() if g.gr_gid != 0)


def ensure_venv() -> Path:
    """The server venv's python, building the venv first if it is not there (once; locked)."""
    server = f"panda-server=={PANDA_SERVER_VERSION}"

    def install(python: Path) -> None:
        venvs.pip_install(python, "--no-deps", *VENV_PINS)
        gid = _non_root_group()
        venvs.pip_install(
            python,
            "--no-deps",
            server,
            # DISABLE_MM: the build hook would otherwise run klist and git and post to a
            # Mattermost webhook named in ~/mm_webhook_url.txt, if there is one.
            env={**os.environ, "DISABLE_MM": "1"},
            **({"group": gid, "extra_groups": []} if gid is not None else {}),
        )

    return venvs.cached_venv("panda-server", venv_dir(), install, (server, *VENV_PINS))


# -- the identity provider --------------------------------------------------------------------
def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TestIdentityProvider:
    """Signs RS256 ID tokens; its discovery document and JWKS are files the shim serves."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = uuid.uuid4().hex[:8]
        self.issuer = ""

    def publish(self, base_url: str, auth_dir: Path) -> None:
        """Write the documents the server fetches, for a server at ``base_url``."""
        self.issuer = f"{base_url}/oidc"
        numbers = self.key.public_key().public_numbers()
        jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.key_id,
               "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "jwks").write_text(json.dumps({"keys": [jwk]}))
        discovery = {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"}
        (self.directory / "openid-configuration").write_text(json.dumps(discovery))
        auth_dir.mkdir(parents=True, exist_ok=True)
        # panda-server reads <vo>_auth_config.json files: the client id it accepts in "aud",
        # where to find the provider, and the VO (members are whoever's "groups" name it).
        config = {
            "client_id": CLIENT_ID,
            "oidc_config_url": f"{self.issuer}/openid-configuration",
            "vo": VO,
        }
        (auth_dir / f"{VO}_auth_config.json").write_text(json.dumps(config))

    def token(self, nickname: str, name: str, *, lifetime: float = 86400.0) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": CLIENT_ID, "sub": nickname, "name": name,
            "preferred_username": nickname, "groups": [VO], "iat": now, "exp": now + lifetime,
        }  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.key_id})


# -- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SERVER_CFG = """\
[server]
backend = postgres
dbhost = {db.host}
dbport = {db.port}
dbuser = {db.username}
dbpasswd = {password}
dbname = {db.database}
nDBConnection = 1
usedbtimeout = False
dbtimeout = 60
schemaPANDA = {schema}
schemaMETA = {schema}
schemaPANDAARCH = {schema}
schemaJEDI = {schema}
schemaDEFT = {schema}
schemaGRISLI = {schema}
schemaEI = {schema}
logdir = {logs}
cache_dir = {cache}
pserverhost = 127.0.0.1
pserverport = {port}
pserverhosthttp = 127.0.0.1
pserverporthttp = {port}
entryVerbose = False
token_authType = oidc
auth_config = {auth}
legacy_token_issuers =
"""

# panda-common's logger reads this section at import, every key of it.
_COMMON_CFG = """\
[logger]
logdir = {logs}
log_level = DEBUG
rotating_policy = none
loghost = 127.0.0.1
monport-apache = 9
monurlprefix = /
method = GET
encoding = url
nemitters = 1
"""


@dataclass(frozen=True)
class OutputFile:
    dataset: str
    lfn: str
    scope: str
    file_id: int


class PandaServer:
    """One panda-server process on a database of its own; helpers that act as author and JEDI."""

    def __init__(self, base: Path, db_url: URL, python: Path) -> None:
        self.base = base
        self.db_url = db_url  # its own database, with the tables of panda_ddl.sql
        self.python = python
        self.logs = base / "logs"
        self.tokens = base / "tokens"
        self.idp = TestIdentityProvider(base / "oidc")
        self.port = 0
        self.start_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses and credentials
    @property
    def url(self) -> str:
        """The server as panda-client's ``$PANDA_URL_SSL`` names it."""
        return f"http://127.0.0.1:{self.port}/server/panda"

    def token_file(self, nickname: str = AGENT) -> Path:
        path = self.tokens / nickname
        if not path.exists():
            self.tokens.mkdir(parents=True, exist_ok=True)
            path.write_text(self.idp.token(nickname, USERS[nickname]))
            path.chmod(0o600)
        return path

    def settings(self, nickname: str = AGENT, **overrides: Any) -> PandaSettings:
        """What the agent is configured with to read from this server as ``nickname``."""
        values: dict[str, Any] = {
            "url": self.url, "auth": "oidc", "token_file": self.token_file(nickname), "vo": VO,
        }  # fmt: skip
        values.update(overrides)
        return PandaSettings(**values)

    def client_env(self, nickname: str = AUTHOR) -> dict[str, str]:
        """The environment a panda-client script needs to talk to this server as ``nickname``."""
        return {
            "PANDA_URL": self.url,
            "PANDA_URL_SSL": self.url,
            "PANDACACHE_URL": self.url,
            "PANDA_BEHIND_REAL_LB": "1",  # use the host as given (no DNS at import or per call)
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": VO,
            "OIDC_AUTH_TOKEN_FILE": str(self.token_file(nickname)),
            "NO_PROXY": "127.0.0.1,localhost",
        }

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> float:
        """Start and wait until it answers; the seconds it took."""
        last_error: Exception | None = None
        for _ in range(_START_ATTEMPTS):
            self.port = self.port or free_port()  # a restart keeps its port (and tokens)
            try:
                return self._start_once()
            except PortTaken as exc:
                last_error = exc
                self.port = 0
        raise RuntimeError(f"panda-server did not start: {last_error}")

    def _start_once(self) -> float:
        started = time.monotonic()
        self._write_config()
        env = {
            **os.environ,
            "PANDA_HOME": str(self.base),  # panda-common reads $PANDA_HOME/etc/panda/*.cfg
            "PANDA_BEHIND_REAL_LB": "1",  # the panda-client-light it imports: no DNS at import
            "IDDS_VIS_PANDA_OIDC_DIR": str(self.idp.directory),
            "PYTHONPATH": str(TESTS_DIR),  # panda_wsgi
            "NO_PROXY": "127.0.0.1,localhost",  # its token check fetches our JWKS
        }
        command = [
            str(self.python.parent / "waitress-serve"),
            f"--listen=127.0.0.1:{self.port}",
            "--threads=4",  # one request verifying a token fetches the JWKS from this server
            "--ident=panda-test",
            "panda_wsgi:application",
        ]
        with open(self.logs / "server.out", "ab") as out:
            # A session of its own: a Ctrl-C aimed at pytest does not kill it mid-test.
            self._proc = subprocess.Popen(
                command, cwd=self.base, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(started + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        seconds = time.monotonic() - started
        self.start_seconds.append(seconds)
        return seconds

    def _write_config(self) -> None:
        for directory in (self.logs, self.base / "cache", self.base / "etc" / "panda"):
            directory.mkdir(parents=True, exist_ok=True)
        auth = self.base / "auth"
        issuer = self.idp.issuer
        self.idp.publish(f"http://127.0.0.1:{self.port}", auth)
        if self.idp.issuer != issuer:  # tokens name their issuer, whose URL has the port
            shutil.rmtree(self.tokens, ignore_errors=True)
        password = self.db_url.password or ""
        (self.base / "etc" / "panda" / "panda_server.cfg").write_text(
            _SERVER_CFG.format(
                db=self.db_url,
                password=password,
                schema=SCHEMA.upper(),
                logs=self.logs,
                cache=self.base / "cache",
                port=self.port,
                auth=auth,
            )
        )
        (self.base / "etc" / "panda" / "panda_common.cfg").write_text(
            _COMMON_CFG.format(logs=self.logs)
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        probe = f"http://127.0.0.1:{self.port}/api/v1/system/is_alive"
        while True:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                if "Address already in use" in tail:
                    raise PortTaken(f"port {self.port} was taken")
                raise RuntimeError(f"panda-server exited ({self._proc.returncode}):\n{tail}")
            try:
                request = urllib.request.Request(probe, headers={"Accept": "application/json"})
                with _NO_PROXY_OPENER.open(request, timeout=2) as answer:
                    if json.load(answer).get("success") is True:
                        return
            except (OSError, ValueError):
                pass  # not listening yet: it binds once the application is imported
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"panda-server did not answer within {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)  # polling an external process's port; nothing to wait on instead

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Its own session: anything it started (it should start nothing) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def rss_bytes(self) -> int:
        """Resident memory of the server process (it has no children)."""
        if self.pid is None:
            return 0
        return int(psutil.Process(self.pid).memory_info().rss)

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for name in ("server.out", "panda-Entry.log", "panda-DBProxy.log"):
            path = self.logs / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no log)"

    # -- the author: submit through the real panda-client
    async def submit_task(self, params: Mapping[str, Any], nickname: str = AUTHOR) -> int:
        """Submit task parameters with ``Client.insertTaskParams``; the new jediTaskID."""
        env = {**os.environ, **self.client_env(nickname)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SUBMIT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(CALL_TIMEOUT):
            out, err = await proc.communicate(json.dumps(dict(params)).encode())
        if proc.returncode != 0:
            raise RuntimeError(f"the submission script failed:\n{err.decode(errors='replace')}")
        status, answer = json.loads(out.decode().strip().splitlines()[-1])
        # insertTaskParams: (0, (0, "succeeded. new jediTaskID=N")) when accepted.
        if status != 0 or not isinstance(answer, list) or answer[0] != 0:
            raise RuntimeError(f"insertTaskParams refused the task: {status} {answer}")
        found = re.search(r"jediTaskID=(\d+)", str(answer[1]))
        if found is None:
            raise RuntimeError(f"no jediTaskID in the answer: {answer}")
        return int(found.group(1))

    # -- JEDI: the rows it writes for a task it ran
    async def finish_task(
        self,
        task_id: int,
        outputs: Sequence[str] = (),
        logs: Sequence[str] = (),
        status: str = "done",
        files_per_dataset: int = 1,
    ) -> list[OutputFile]:
        """Mark the submitted task as run by JEDI, with ``outputs``/``logs`` as the containers
        of its output and log datasets; the files written into them."""
        conn = await self.connect()
        try:
            async with conn.transaction():
                task = await conn.fetchrow(
                    "SELECT taskname, username, vo, prodsourcelabel, jedi_task_parameters "
                    "FROM t_task WHERE taskid = $1",
                    task_id,
                )
                if task is None:
                    raise LookupError(f"task {task_id} was never submitted")
                await conn.execute("UPDATE t_task SET status = $2 WHERE taskid = $1",
                                   task_id, status)  # fmt: skip
                await conn.execute(
                    "INSERT INTO jedi_tasks (jeditaskid, taskname, status, username, vo, "
                    "prodsourcelabel, tasktype, creationdate, modificationtime, starttime, "
                    "endtime) VALUES ($1, $2, $3, $4, $5, $6, 'anal', now(), now(), now(), now()) "
                    "ON CONFLICT (jeditaskid) DO UPDATE SET status = EXCLUDED.status, "
                    "modificationtime = now(), endtime = now()",
                    task_id, task["taskname"], status, task["username"], task["vo"],
                    task["prodsourcelabel"],
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO jedi_taskparams (jeditaskid, taskparams) VALUES ($1, $2) "
                    "ON CONFLICT (jeditaskid) DO NOTHING",
                    task_id, task["jedi_task_parameters"],
                )  # fmt: skip
                await conn.execute("DELETE FROM jedi_dataset_contents WHERE jeditaskid = $1",
                                   task_id)  # fmt: skip
                await conn.execute("DELETE FROM jedi_datasets WHERE jeditaskid = $1", task_id)
                # The input JEDI read (its counters are summed by get_details).
                await conn.execute(
                    "INSERT INTO jedi_datasets (jeditaskid, datasetid, datasetname, "
                    "containername, type, status, nfiles, nfilestobeused, nfilesused, "
                    "nfilesfinished) VALUES ($1, 1, $2, $3, 'input', 'done', 1, 1, 1, 1)",
                    task_id, f"{task['taskname'].rstrip('/')}.input", None,
                )  # fmt: skip
                files = await _insert_outputs(conn, task_id, outputs, logs, files_per_dataset)
        finally:
            await conn.close()
        return files

    async def connect(self) -> asyncpg.Connection:
        dsn = self.db_url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn: asyncpg.Connection = await asyncpg.connect(dsn, server_settings={
            "search_path": SCHEMA})  # fmt: skip
        return conn


class PortTaken(RuntimeError):
    pass


# Loopback only: never through a proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Run by submit_task with the environment of PandaServer.client_env: an author's script.
_SUBMIT = """\
import json, sys
from pandaclient import Client
status, answer = Client.insertTaskParams(json.load(sys.stdin))
print(json.dumps([status, answer]))
"""


def rucio_scope(name: str) -> str:
    """The Rucio scope of a dataset name: the first two dot-fields of user./group. names."""
    fields = name.split(".")
    return ".".join(fields[:2]) if fields[0] in ("user", "group") else fields[0]


async def _insert_outputs(
    conn: asyncpg.Connection,
    task_id: int,
    outputs: Sequence[str],
    logs: Sequence[str],
    files_per_dataset: int,
) -> list[OutputFile]:
    files: list[OutputFile] = []
    kinds = [(c, "output") for c in outputs] + [(c, "log") for c in logs]
    for dataset_id, (container, kind) in enumerate(kinds, start=2):
        # JEDI names a task's dataset after its container, with the task id appended.
        dataset = f"{container.rstrip('/')}.{task_id}"
        await conn.execute(
            "INSERT INTO jedi_datasets (jeditaskid, datasetid, datasetname, containername, "
            "type, status, nfiles, nfilesfinished) VALUES ($1, $2, $3, $4, $5, 'done', $6, $6)",
            task_id, dataset_id, dataset, container, kind, files_per_dataset,
        )  # fmt: skip
        scope = rucio_scope(container)
        for number in range(1, files_per_dataset + 1):
            file_id = dataset_id * 1000 + number
            lfn = f"{dataset}._{number:06d}.{'log.tgz' if kind == 'log' else 'tgz'}"
            await conn.execute(
                "INSERT INTO jedi_dataset_contents (jeditaskid, datasetid, fileid, lfn, scope, "
                "status, proc_status) VALUES ($1, $2, $3, $4, $5, 'finished', 'finished')",
                task_id, dataset_id, file_id, lfn, scope,
            )  # fmt: skip
            files.append(OutputFile(dataset=dataset, lfn=lfn, scope=scope, file_id=file_id))
    return files


# -- the database and the fixture ------------------------------------------------------------
async def create_database(server_url: str) -> URL:
    """A new database on the server of ``server_url`` with the tables of panda_ddl.sql."""
    url = make_url(server_url)
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"idds_vis_panda_{secrets.token_hex(6)}"  # generated: safe to quote as is
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db_url = url.set(database=name)
    conn = await asyncpg.connect(
        db_url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        await conn.execute(f"SET search_path TO {SCHEMA}")
        await conn.execute(DDL.read_text())
    finally:
        await conn.close()
    return db_url


async def admin_execute(server_url: str, sql: str) -> None:
    """Run ``sql`` on the server's maintenance database (e.g. ALTER DATABASE)."""
    dsn = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@contextmanager
def running_panda_server(pg_server_url: str) -> Iterator[PandaServer]:
    """A started panda-server on a new database of the given PostgreSQL server; all removed
    on exit."""
    python = ensure_venv()
    db_url = asyncio.run(create_database(pg_server_url))
    base = Path(tempfile.mkdtemp(prefix="idds-vis-panda-"))
    server = PandaServer(base, db_url, python)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop = f'DROP DATABASE IF EXISTS "{db_url.database}" WITH (FORCE)'
        asyncio.run(admin_execute(pg_server_url, drop))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def panda_server(pg_server: str) -> Iterator[PandaServer]:
    """A panda-server for the whole run, on a database of its own; started on first use."""
    with running_panda_server(pg_server) as server:
        yield server


if __name__ == "__main__":
    print(ensure_venv())
