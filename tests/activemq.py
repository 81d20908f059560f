"""A throwaway ActiveMQ broker for the STOMP tests, run from Debian's ``activemq`` package.

Debian's package is laid out for an init script (``/etc/activemq/instances-enabled``, a
``activemq`` user, ``su``, pid files under /run) and its shipped ``log4j2.properties`` is ignored
because the packaged broker logs through log4j 1.2. None of that is used here: the broker jar
(``/usr/share/activemq/bin/activemq.jar``) is run directly with its ``start`` task, which stays
in the foreground, against a private instance directory holding its own ``activemq.xml`` (a
STOMP connector on 127.0.0.1 only, no other connector, KahaDB in the instance directory, small
memory and store limits, one user with a password) and a log4j 1.2 config writing
``data/activemq.log``.

``ActiveMQ`` starts, stops and restarts such a broker on a fixed port (a restart keeps the port
and the persisted messages). ``activemq_broker`` is the session fixture: a ``BrokerAddress``
(host, port, user, password) for the whole run, started on first use only.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import stomp

ACTIVEMQ_HOME = Path("/usr/share/activemq")
RUN_JAR = ACTIVEMQ_HOME / "bin" / "activemq.jar"
USER = "idds-vis"
PASSWORD = "not-a-secret"
SETUP_HINT = (
    "run `bash tests/run.sh` once (it installs Debian's activemq package), "
    "or `apt-get install activemq`"
)
# Enough for a cold JVM on a loaded 2-core machine; a warm start takes about 1-2 s.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# Quick JVM start: one GC thread, no C2 compilation; the broker's load here is tiny.
JAVA_OPTS = [
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]

_ACTIVEMQ_XML = """\
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans
         http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
         http://activemq.apache.org/schema/core
         http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="idds-vis-test"
          useJmx="false" persistent="true" advisorySupport="false" schedulerSupport="false"
          dataDirectory="{data}">
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
          <authenticationUser username="{user}" password="{password}" groups="users"/>
        </users>
      </simpleAuthenticationPlugin>
    </plugins>
    <persistenceAdapter>
      <kahaDB directory="{data}/kahadb" journalMaxFileLength="4mb"/>
    </persistenceAdapter>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        <storeUsage><storeUsage limit="512 mb"/></storeUsage>
        <tempUsage><tempUsage limit="128 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"""

_LOG4J = """\
log4j.rootLogger=WARN, logfile
log4j.logger.org.apache.activemq.broker.BrokerService=INFO
log4j.appender.logfile=org.apache.log4j.FileAppender
log4j.appender.logfile.file={data}/activemq.log
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
"""


class ActiveMQMissing(RuntimeError):
    """Debian's activemq package (or a Java runtime) is not installed."""


class BrokerAddress(NamedTuple):
    host: str
    port: int
    user: str
    password: str


def find_java() -> str:
    for candidate in (shutil.which("java"), "/usr/lib/jvm/default-java/bin/java"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ActiveMQMissing(f"no Java runtime found: {SETUP_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ActiveMQ:
    """One broker instance in ``base``; ``start()`` returns the seconds it took to serve STOMP."""

    def __init__(self, base: Path, port: int | None = None) -> None:
        if not RUN_JAR.exists():
            raise ActiveMQMissing(f"{RUN_JAR} not found: {SETUP_HINT}")
        self.java = find_java()
        self.base = base
        self.port = port or free_port()
        self.conf = base / "conf"
        self.data = base / "data"
        self.address = BrokerAddress("127.0.0.1", self.port, USER, PASSWORD)
        self.start_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        self.conf.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        values = {"data": self.data, "port": self.port, "user": USER, "password": PASSWORD}
        (self.conf / "activemq.xml").write_text(_ACTIVEMQ_XML.format(**values))
        (self.conf / "log4j.properties").write_text(_LOG4J.format(**values))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> float:
        if self.running:
            return 0.0
        started = time.monotonic()
        command = [
            self.java,
            *JAVA_OPTS,
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.base}",
            f"-Dactivemq.conf={self.conf}",
            f"-Dactivemq.data={self.data}",
            f"-Dactivemq.classpath={self.conf}",  # where log4j.properties is found
            "-jar",
            str(RUN_JAR),
            "start",
            f"xbean:file:{self.conf / 'activemq.xml'}",
        ]
        with open(self.base / "console.log", "ab") as console:
            # A session of its own: a Ctrl-C aimed at pytest does not kill it mid-test.
            self._proc = subprocess.Popen(
                command,
                cwd=self.base,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(started + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        seconds = time.monotonic() - started
        self.start_seconds.append(seconds)
        return seconds

    def _wait_ready(self, deadline: float) -> None:
        """Until a STOMP CONNECT with our credentials is answered CONNECTED."""
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"ActiveMQ exited with code {self._proc.returncode}:\n{self.log_tail()}"
                )
            if stomp_handshake(self.address):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ActiveMQ did not serve STOMP within {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # polling an external process's port; nothing to wait on instead

    def stop(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM runs the broker's shutdown hook; ``kill`` simulates a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # in case a test paused it
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but says nothing (a hung broker)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> float:
        self.stop(kill=kill)
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for name in (self.base / "console.log", self.data / "activemq.log"):
            if name.exists():
                text += (
                    f"--- {name}\n"
                    + "\n".join(name.read_text(errors="replace").splitlines()[-lines:])
                    + "\n"
                )
        return text

    def __enter__(self) -> ActiveMQ:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stomp_handshake(address: BrokerAddress, timeout: float = 2.0) -> bool:
    """True if the broker answers a STOMP 1.2 CONNECT with CONNECTED (plain socket, no client)."""
    frame = (
        f"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{address.user}\n"
        f"passcode:{address.password}\n\n\x00"
    ).encode()
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            sock.sendall(frame)
            answer = b""
            while b"\x00" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                answer += chunk
            sock.sendall(b"DISCONNECT\n\n\x00")
            return answer.lstrip(b"\r\n").startswith(b"CONNECTED")
    except OSError:
        return False


@pytest.fixture(scope="session")
def activemq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerAddress]:
    """A broker for the whole test session (started on first use, stopped at the end)."""
    try:
        broker = ActiveMQ(tmp_path_factory.mktemp("activemq"))
    except ActiveMQMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    seconds = broker.start()
    print(f"\nActiveMQ ready on port {broker.port} after {seconds:.2f} s")
    try:
        yield broker.address
    finally:
        broker.stop()


class Collector:
    """A stomp.py listener gathering frames into queues (blocking use only)."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put((dict(frame.headers), frame.body))

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])


def connect_collector(address: BrokerAddress) -> tuple[Any, Collector]:
    """A connection whose frames (bodies as bytes) and receipts land in a Collector."""
    conn = stomp.Connection12([(address.host, address.port)], auto_decode=False)
    collector = Collector()
    conn.set_listener("collector", collector)
    conn.connect(address.user, address.password, wait=True)
    return conn, collector
