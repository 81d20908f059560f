"""A real iDDS (REST server + agents, from PyPI) on loopback for the integration tests.

What runs (all on 127.0.0.1, started and stopped by the ``idds_server`` session fixture):

- PostgreSQL: a database of its own on the session's throwaway server (``pg_server``), the
  schema named in ``[database] schema``, tables built by iDDS's own
  ``idds.orm.base.utils.build_database()`` (which creates the schema, the tables, and stamps
  alembic with ``ALEMBIC_CONFIG``).
- Redis (``redis_server``): the agents' cache (``[cache] host/port``).
- ActiveMQ (``activemq_broker``): the conductor's notifier
  ``idds.agents.common.plugins.messaging.MessagingSender`` publishes ``work_processing`` and
  other messages to ``IddsServer.topic`` over STOMP.
- The agents: ``python -m idds.agents.main``, one process holding every agent as a thread
  (``AGENTS``; they talk through the in-process event bus), with short poll periods.
- The REST app ``idds.rest.v1.app:create_app()`` under waitress, mounted at ``/idds`` as in
  production. Apache's mod_ssl normally puts the client certificate's DN in the WSGI
  environ; a two-line shim sets ``SSL_CLIENT_S_DN``/``SSL_CLIENT_CERT`` instead, and the
  auth config allows that DN. Clients still need ``X509_USER_PROXY`` pointing at a readable
  file (the client sends it and the workflow embeds it), so the fixture writes a dummy one.

iDDS pins old and loose dependencies (SQLAlchemy, Flask, oracledb, pyzmq, oic, psycopg2 ...),
so the server side runs from a virtualenv of its own, built once per set of pins under
``~/.cache/idds-vis-tests/`` (``$XDG_CACHE_HOME`` if set) and reused by later runs. The
repository root is on the iDDS processes' ``PYTHONPATH``: the server rebuilds custom works by
importing their module (``idds_vis.idds``, ``tests.idds_works.standin``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from tests import venvs
from tests.activemq import BrokerAddress
from tests.redis import RedisAddress

if TYPE_CHECKING:
    from idds.client.clientmanager import ClientManager

REPO_ROOT = Path(__file__).resolve().parent.parent
IDDS_VERSION = "2.6.21"
# Everything the server side needs, pinned exactly; the venv's directory name is a hash of
# this tuple (and of the Python version), so changing a pin builds a new venv.
VENV_PINS = (
    f"idds-common=={IDDS_VERSION}",
    f"idds-workflow=={IDDS_VERSION}",
    f"idds-client=={IDDS_VERSION}",
    f"idds-server=={IDDS_VERSION}",
    f"idds-doma=={IDDS_VERSION}",
    # The REST app imports idds.prompt (its workflowtask blueprint) at start-up.
    f"idds-prompt=={IDDS_VERSION}",
    "SQLAlchemy==2.1.9",
    "alembic==1.20.1",
    "Flask==3.1.3",
    "psycopg2-binary==2.9.13",
    "redis==8.1.0",
    "stomp.py==9.0.0",
    "waitress==3.0.2",
)
AGENTS = ("clerk", "transformer", "submitter", "poller", "finisher", "conductor")
SCHEMA = "doma_idds"
URL_PREFIX = "/idds"
# The identity the REST server "sees" for every request (what mod_ssl would take from the
# client certificate); the username iDDS derives from it is the last CN.
CLIENT_DN = "/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=iddsvis/CN=000001/CN=idds-vis test"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


def venv_dir() -> Path:
    return venvs.venv_dir("idds-venv", [VENV_PINS])


def ensure_venv() -> Path:
    """The server venv's python, building the venv first if it is not there (once; locked)."""
    return venvs.cached_venv(
        "iDDS server", venv_dir(), lambda python: venvs.pip_install(python, *VENV_PINS), VENV_PINS
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- configuration files ------------------------------------------------------------------

# Poll periods: iDDS's defaults are minutes; these make a trivial workflow finish in seconds.
# The agents' main loops poll the database every 10 s (hard-coded); work in between is
# triggered through the in-process event bus.
_IDDS_CFG = """\
[common]
logdir = {logs}
loglevel = {loglevel}

[database]
default = {db_url}
schema = {schema}
pool_size = 10
max_overflow = 10
pool_recycle = 3600
echo = 0
pool_reset_on_return = rollback

[rest]
host = {rest_url}
cacher_dir = {cacher}

[main]
agents = {agents}

[eventbus]
backend = default

[cache]
host = {redis_host}
port = {redis_port}

[clerk]
num_threads = 2
max_number_workers = 2
poll_period = 1
new_poll_period = 1
update_poll_period = 1
new_command_poll_period = 1
update_command_poll_period = 1
max_new_poll_period = 2
max_update_poll_period = 2
poll_time_period = 1
poll_operation_time_period = 1
retrieve_bulk_size = 8
pending_time = 30

[transformer]
num_threads = 2
max_number_workers = 2
poll_period = 1
new_poll_period = 1
update_poll_period = 1
max_new_poll_period = 2
max_update_poll_period = 2
poll_time_period = 1
poll_operation_time_period = 1
retrieve_bulk_size = 8
message_bulk_size = 100

[carrier]
num_threads = 2
max_number_workers = 2
trigger_max_number_workers = 2
finisher_max_number_workers = 2
poll_period = 1
new_poll_period = 1
update_poll_period = 1
update_poll_period_for_new_task = 1
max_new_poll_period = 2
max_update_poll_period = 2
poll_time_period = 1
poll_operation_time_period = 1
retrieve_bulk_size = 8
message_bulk_size = 100

[conductor]
num_threads = 1
# Spacing of re-sends of delivered messages (x a random 1..retries+1); not the 60 s hold.
delay = {conductor_delay}
replay_times = 2
threshold_to_release_messages = 1000
random_delay = 5
plugin.notifier = idds.agents.common.plugins.messaging.MessagingSender
plugin.notifier.username = {broker_user}
plugin.notifier.password = {broker_password}
plugin.notifier.channels = {channels}
"""

_AUTH_CFG = """\
[common]
allow_vos = idds-vis-test

[Users]
allow_users = {dn}
ban_users = nobody-is-banned
super_users = nobody-is-super
"""

_ALEMBIC_INI = """\
[alembic]
script_location = idds.orm.base:alembic
sqlalchemy.url = {db_url}
version_table_schema = {schema}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

# Runs in the venv: a database of its own, then iDDS builds its schema and stamps alembic.
_BUILD_DATABASE = """\
import sys
import psycopg2
admin = psycopg2.connect(sys.argv[1])
admin.autocommit = True
admin.cursor().execute('CREATE DATABASE "%s"' % sys.argv[2])
admin.close()
from idds.orm.base.utils import build_database
build_database(echo=False)
"""

_DROP_DATABASE = """\
import sys
import psycopg2
admin = psycopg2.connect(sys.argv[1])
admin.autocommit = True
admin.cursor().execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % sys.argv[2])
admin.close()
"""

# Runs in the venv: the REST app behind what Apache + mod_ssl would add.
_REST_SERVER = """\
import sys
import waitress
from idds.rest.v1.app import create_app

DN = {dn!r}
app = create_app()


def with_client_certificate(environ, start_response):
    environ["SSL_CLIENT_S_DN"] = DN
    environ["SSL_CLIENT_CERT"] = "-----BEGIN CERTIFICATE-----test-----END CERTIFICATE-----"
    return app(environ, start_response)


waitress.serve(with_client_certificate, host="127.0.0.1", port=int(sys.argv[1]),
               url_prefix={prefix!r}, threads=4, ident="idds-test")
"""


# Runs in the venv: iDDS's own agents entry point, with one change. Each agent's main loop and
# each timer thread waits 10-100 µs between rounds (baseagent.py:250, timerscheduler.py:213 in
# 2.6.21): measured here, the idle agents process burnt 94 % of a core, all session long, on
# a 2-core machine. The two loops below are theirs with a 20 ms idle wait instead; work still
# starts within 20 ms of being due, and the agents' 10 s database polls are unchanged.
_AGENTS_MAIN = """\
import runpy
import traceback

from idds.agents.common.baseagent import BaseAgent
from idds.agents.common.timerscheduler import TimerScheduler

IDLE_WAIT = 0.02


def execute(self):
    while not self.graceful_stop.is_set():
        try:
            self.execute_timer_schedule_thread()
            self.execute_event_schedule()
            self.graceful_stop.wait(IDLE_WAIT)
        except Exception as error:
            self.logger.critical("Caught an exception: %s\\n%s" % (error, traceback.format_exc()))


def execute_local(self):
    while not self.graceful_stop.is_set():
        try:
            task = self.get_ready_task()
            if task:
                self.executors_timer.submit(self.execute_task, task)
            else:
                self.graceful_stop.wait(IDLE_WAIT)
        except Exception as error:
            self.logger.critical("Caught an exception: %s\\n%s" % (error, traceback.format_exc()))


BaseAgent.execute = execute
TimerScheduler.execute_local = execute_local
runpy.run_module("idds.agents.main", run_name="__main__", alter_sys=True)
"""


@dataclass
class IddsServer:
    """What a test needs to talk to the running iDDS."""

    rest_url: str  # ClientManager(host=...)
    topic: str  # where the conductor publishes work_processing messages
    broker: BrokerAddress
    client_env: Mapping[str, str]  # set in os.environ for the session by the fixture
    logs: Mapping[str, Path]
    workdir: Path
    venv_python: Path
    # Where the iDDS agents' VisualizationWork/TeardownWork reach idds-vis (IDDS_VIS_* in
    # their environment): the requests queue on the same broker, and the port a test's
    # idds-vis agent serves its web app on.
    vis_destination: str = ""
    vis_api_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self) -> ClientManager:
        from idds.client.clientmanager import ClientManager

        return ClientManager(host=self.rest_url)

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for name, path in self.logs.items():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}: {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def check_running(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"iDDS {name} exited with {proc.returncode}:\n{self.log_tail()}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (iDDS's own stop handler), SIGKILL it if it lingers."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
    # Also whatever the leader left behind in its group (none expected; cheap to make sure).
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_port(server: IddsServer, name: str, port: int, deadline: float) -> None:
    while True:
        server.check_running()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"iDDS {name} is not listening in time:\n{server.log_tail()}")
        time.sleep(0.05)  # polling an external process's port; nothing to wait on instead


@contextmanager
def running_idds(
    pg_url: str,
    redis: RedisAddress,
    broker: BrokerAddress,
    workdir: Path,
    *,
    agents: tuple[str, ...] = AGENTS,
    loglevel: str = "INFO",
    conductor_delay: int = 30,
) -> Iterator[IddsServer]:
    """Build the database and start the REST server and the agents; stop them on exit."""
    python = ensure_venv()
    logs_dir = workdir / "logs"
    for sub in (logs_dir, workdir / "cacher", workdir / "client", workdir / "requests"):
        sub.mkdir(parents=True, exist_ok=True)

    pg = make_url(pg_url)
    database = f"idds_{uuid.uuid4().hex[:12]}"
    server_dsn = pg.set(drivername="postgresql", database="postgres").render_as_string(False)
    db_url = pg.set(drivername="postgresql+psycopg2", database=database).render_as_string(False)
    rest_port = free_port()
    rest_url = f"http://127.0.0.1:{rest_port}{URL_PREFIX}"
    topic = f"/topic/idds-vis-test.{uuid.uuid4().hex[:8]}"
    vis_destination = f"/queue/idds-vis-test.requests.{uuid.uuid4().hex[:8]}"
    vis_api_port = free_port()
    channels = {
        "default": {
            "brokers": [f"{broker.host}:{broker.port}"],
            "destination": topic,
            "username": broker.user,
            "password": broker.password,
            "broker_timeout": 10,
        }
    }

    idds_cfg = workdir / "idds.cfg"
    idds_cfg.write_text(
        _IDDS_CFG.format(
            logs=logs_dir,
            loglevel=loglevel,
            db_url=db_url.replace("%", "%%"),
            schema=SCHEMA,
            rest_url=rest_url,
            cacher=workdir / "cacher",
            agents=", ".join(agents),
            redis_host=redis.host,
            redis_port=redis.port,
            conductor_delay=conductor_delay,
            broker_user=broker.user,
            broker_password=broker.password,
            channels=json.dumps(channels),
        )
    )
    auth_cfg = workdir / "auth.cfg"
    auth_cfg.write_text(_AUTH_CFG.format(dn=CLIENT_DN))
    alembic_ini = workdir / "alembic.ini"
    alembic_ini.write_text(_ALEMBIC_INI.format(db_url=db_url.replace("%", "%%"), schema=SCHEMA))
    rest_script = workdir / "rest_server.py"
    rest_script.write_text(_REST_SERVER.format(dn=CLIENT_DN, prefix=URL_PREFIX))
    agents_script = workdir / "agents_main.py"
    agents_script.write_text(_AGENTS_MAIN)
    proxy = workdir / "client" / "x509up"
    proxy.write_text("not a real proxy: the test REST server does not check certificates\n")
    proxy.chmod(0o600)

    server_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IDDS_", "PYTHON"))},
        "IDDS_CONFIG": str(idds_cfg),
        "IDDS_AUTH_CONFIG": str(auth_cfg),
        "ALEMBIC_CONFIG": str(alembic_ini),
        "IDDS_LOCAL_CONFIG_ROOT": str(workdir / "server-local"),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "X509_USER_PROXY": str(proxy),
        # idds_vis.idds's works, run by these agents, send to and read from idds-vis here.
        "IDDS_VIS_BROKERS": f"{broker.host}:{broker.port}",
        "IDDS_VIS_DESTINATION": vis_destination,
        "IDDS_VIS_BROKER_USER": broker.user,
        "IDDS_VIS_BROKER_PASSWORD": broker.password,
        "IDDS_VIS_API": f"http://127.0.0.1:{vis_api_port}",
    }
    client_env = {
        "IDDS_LOCAL_CONFIG_ROOT": str(workdir / "client"),
        "IDDS_REQUEST_CACHE": str(workdir / "requests"),
        "IDDS_AUTH_TYPE": "x509_proxy",
        "IDDS_HOST": rest_url,
        "X509_USER_PROXY": str(proxy),
    }
    # Where iDDS 2.6.21 really writes: the agents log to stdout, except the conductor (a file
    # of its own); the REST app to idds_rest.log in [common] logdir.
    logs = {
        "agents": logs_dir / "agents.console",
        "conductor": logs_dir / "Conductor.log",
        "rest": logs_dir / "idds_rest.log",
        "rest-console": logs_dir / "rest.console",
        "build-database": logs_dir / "build_database.console",
    }
    server = IddsServer(
        rest_url=rest_url,
        topic=topic,
        broker=broker,
        client_env=client_env,
        logs=logs,
        workdir=workdir,
        venv_python=python,
        vis_destination=vis_destination,
        vis_api_port=vis_api_port,
    )

    def admin(script: str, log: Path | None = None) -> None:
        done = subprocess.run(
            [str(python), "-c", script, server_dsn, database],
            env=server_env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if log is not None:
            log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"iDDS database step failed:\n{done.stdout}{done.stderr}")

    def spawn(name: str, args: list[str], console: Path) -> None:
        with open(console, "ab") as out:
            server.processes[name] = subprocess.Popen(
                [str(python), *args],
                env=server_env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )

    def stop_all() -> None:
        for proc in reversed(server.processes.values()):
            _stop_group(proc)

    with ExitStack() as stack:
        started = time.monotonic()
        stack.callback(admin, _DROP_DATABASE)
        admin(_BUILD_DATABASE, logs["build-database"])
        stack.callback(stop_all)
        spawn("rest", [str(rest_script), str(rest_port)], logs["rest-console"])
        spawn("agents", [str(agents_script)], logs["agents"])
        _wait_port(server, "REST server", rest_port, time.monotonic() + START_TIMEOUT)
        print(f"\niDDS {IDDS_VERSION} up in {time.monotonic() - started:.1f} s: {rest_url}")
        yield server


@pytest.fixture(scope="session")
def idds_server(
    pg_server: str,
    redis_server: RedisAddress,
    activemq_broker: BrokerAddress,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[IddsServer]:
    """A real iDDS for the session; the client environment is set in ``os.environ`` meanwhile.

    Its configuration and logs stay in pytest's temporary directory (``idds0``) afterwards.
    """
    workdir = tmp_path_factory.mktemp("idds")
    with running_idds(pg_server, redis_server, activemq_broker, workdir) as server:
        saved = {name: os.environ.get(name) for name in server.client_env}
        os.environ.update(server.client_env)
        try:
            yield server
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def debug_main() -> None:  # pragma: no cover - a hand tool: `python -m tests.idds_server`
    """Start the whole stack, print how to reach it, keep it up until SIGINT/SIGTERM."""
    from tests.activemq import ActiveMQ
    from tests.pg import throwaway_postgres
    from tests.redis import throwaway_redis

    workdir = Path(tempfile.mkdtemp(prefix="idds-vis-idds-"))
    with ExitStack() as stack:
        pg = stack.enter_context(throwaway_postgres())
        redis = stack.enter_context(throwaway_redis())
        broker = stack.enter_context(ActiveMQ(workdir / "activemq"))
        server = stack.enter_context(running_idds(pg, redis, broker.address, workdir))
        reach = {
            "rest_url": server.rest_url,
            "topic": server.topic,
            "broker": broker.address._asdict(),
            "workdir": str(workdir),
            "client_env": dict(server.client_env),
        }
        print(json.dumps(reach, indent=2), flush=True)
        # A background job ignores SIGINT, so SIGTERM stops it too (cleanly, through the stack).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.default_int_handler)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    debug_main()
