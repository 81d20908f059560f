"""A warm pool of local UI processes (issue 18): MLflow imported and listening, no data yet.

A request takes an idle member and hands it its staged store over one authenticated call; the
pool refills in the background. The rules:

- A member serves exactly one instance for its whole life and is never returned to the pool:
  once handed a store it is an ordinary UI of that instance, stopped with it.
- The hand-over is authenticated by a per-member secret the agent holds (a 0600 file in the
  member's directory, handed to the process in its environment, never on a command line, in
  a log or a label); the member listens on loopback and accepts exactly one hand-over, of a
  staged directory under this deployer's instances directory. Until then it answers 503.
- Members are recycled after ``max_age`` and whenever ``version`` (idds-vis, MLflow, the
  interpreter and the member's command) differs from the current one.
- A restarted agent finds its members again by their label: idle ones of the current version
  rejoin the pool (their secret is on disk), claimed ones are UIs like any other
  (``local_processes.find_ui_processes`` reads the claim file), the rest are stopped.
- ``close()`` stops every idle member and removes its directory: nothing stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from idds_vis.deploy import local_processes as procs
from idds_vis.domain.errors import DeployError
from idds_vis.domain.naming import PROXY_SECRET_ENV

log = logging.getLogger(__name__)

# The member's control paths, outside every UI prefix (ui/pool_member.py, ui/stub.py).
HANDOVER_PATH = "/.idds-vis/handover"
STATE_PATH = "/.idds-vis/pool"
SECRET_HEADER = "X-Idds-Vis-Pool-Secret"
SECRET_ENV = "IDDS_VIS_POOL_SECRET"
SECRET_FILE = "handover.secret"
PROXY_SECRET_FILE = "proxy.secret"
CHECK_EVERY = 300.0  # seconds between looks at the members' age and the UI's version


class PoolObserver(Protocol):
    """What the pool reports (the agent's metrics implement it)."""

    def pool_size(self, tool: str, size: int) -> None: ...
    def pool_hit(self, tool: str) -> None: ...
    def pool_miss(self, tool: str) -> None: ...
    def pool_refilled(self, tool: str, seconds: float) -> None: ...


class NoObserver:
    def pool_size(self, tool: str, size: int) -> None:
        pass

    def pool_hit(self, tool: str) -> None:
        pass

    def pool_miss(self, tool: str) -> None:
        pass

    def pool_refilled(self, tool: str, seconds: float) -> None:
        pass


def ui_version(argv: Sequence[str], python: str = sys.executable) -> str:
    """What a member started now would run: recycled when this changes."""
    parts = [python, " ".join(argv)]
    for dist in ("idds-vis", "mlflow"):
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=none")
    return "|".join(parts)


@dataclasses.dataclass
class Member:
    id: str
    pid: int
    port: int
    secret: str
    started: float  # epoch seconds
    version: str

    def base(self, host: str) -> str:
        return f"http://{host}:{self.port}"


# Starts a member process: (member id, port, environment additions) -> pid.
Spawner = Callable[[str, int, dict[str, str]], Awaitable[int]]
# A port for a new member, given the ports in use.
PortPicker = Callable[[], Awaitable[int]]


class LocalPool:
    def __init__(
        self,
        pool_dir: Path,
        *,
        label: str,
        size: int,
        max_age: float,
        version: str | Callable[[], str],
        spawn: Spawner,
        pick_port: PortPicker,
        host: str = "127.0.0.1",
        tool: str = "mlflow",
        observer: PoolObserver | None = None,
        start_timeout: float = 180.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.dir = pool_dir
        self.label = label
        self.size = size
        self.max_age = max_age
        # A function: looked up again at each refill check, so that an upgrade in place
        # (pip) recycles the idle members within CHECK_EVERY.
        self._version_of = version if callable(version) else None
        self.version = version() if callable(version) else version
        self.spawn = spawn
        self.pick_port = pick_port
        self.host = host
        self.tool = tool
        self.observer = observer or NoObserver()
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.idle: list[Member] = []
        self._starting: set[int] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()  # referenced until done
        self._task: asyncio.Task[None] | None = None
        self.hits = 0
        self.misses = 0

    # -- the agent's side --------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what a previous agent left, then keep the pool full (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._keep_full())

    async def take(self) -> Member | None:
        """An idle member of the current version, young enough; None: start cold."""
        now = time.time()
        while self.idle:
            member = self.idle.pop(0)  # off the list first: no other request can take it
            if self._fresh(member, now) and await asyncio.to_thread(
                procs.is_member, member.pid, member.id
            ):
                self.hits += 1
                self.observer.pool_hit(self.tool)
                self._report()
                self._wake.set()
                return member
            self._retire_later(member)
        self.misses += 1
        self.observer.pool_miss(self.tool)
        self._wake.set()
        return None

    def claim_file(self, member: Member) -> Path:
        return self.dir / member.id / procs.CLAIM_FILE

    def proxy_secret(self, member: Member) -> str | None:
        return _read_private(self.dir / member.id / PROXY_SECRET_FILE)

    async def claim(self, member: Member, name: str) -> bool:
        """Write whose the member is before handing it over: a restarted agent then finds it
        as that instance's UI (or removes it as an orphan), never as an idle member. False
        when someone else claimed it first (the file is created exclusively)."""

        def write() -> bool:
            try:
                fd = os.open(
                    self.claim_file(member),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o600,
                )
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as out:
                out.write(name)
            return True

        return await asyncio.to_thread(write)

    async def hand_over(self, member: Member, body: dict[str, Any], timeout: float) -> None:
        """The one authenticated call that gives ``member`` its instance; DeployError if not."""
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.post(
                    member.base(self.host) + HANDOVER_PATH,
                    json=body,
                    headers={SECRET_HEADER: member.secret},
                ) as resp,
            ):
                text = (await resp.text())[:300]
                if resp.status != 200:
                    raise DeployError(
                        f"the pooled UI refused its hand-over (HTTP {resp.status}): {text.strip()}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeployError(f"the pooled UI did not take its hand-over: {exc}") from exc

    async def close(self) -> None:
        """Stop the refill and every member not handed an instance; remove their files."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        idle, self.idle = self.idle, []
        for member in idle:  # as at retirement: one that died since is not its pid's process
            await asyncio.to_thread(self._retire, member)
        await asyncio.to_thread(self._stop_all, sorted(self._starting), [])
        # A member of ours this agent did not know of (started by a previous one, not adopted).
        await asyncio.to_thread(self._remove_unclaimed)
        self._report()

    def remove_member_dir(self, member_id: str) -> None:
        """Blocking: a claimed member's directory, when its instance is deleted."""
        remove_member_dir(self.dir, member_id)

    # -- the refill ---------------------------------------------------------------------------
    def _fresh(self, member: Member, now: float) -> bool:
        return member.version == self.version and now - member.started < self.max_age

    def _report(self) -> None:
        self.observer.pool_size(self.tool, len(self.idle))
        self._in_background(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[LocalPool], bool]) -> None:
        """Until ``predicate(pool)`` holds after a change of the idle members (for tests and
        the benchmark: no polling)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def _retire_later(self, member: Member) -> None:
        self._in_background(asyncio.to_thread(self._retire, member))

    def _retire(self, member: Member) -> None:
        # A member that died may have left its pid to another process: only the member goes.
        alive = procs.is_member(member.pid, member.id)
        self._stop_all([member.pid] if alive else [], [member.id])

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stop_all(self, pids: Sequence[int], ids: Sequence[str]) -> None:
        for pid in pids:
            procs.stop_process_group(pid)
        for member_id in ids:
            self.remove_member_dir(member_id)

    def _remove_unclaimed(self) -> None:
        stop_unclaimed_members(self.label, self.dir)
        self._remove_stale_dirs()

    def _remove_stale_dirs(self) -> None:
        """Member directories whose process is gone and that no instance claimed."""
        alive = {m.member for m in procs.find_pool_members(self.label, self.dir)}
        with contextlib.suppress(OSError):
            for entry in self.dir.iterdir():
                if entry.name in alive or not procs.MEMBER_ID.fullmatch(entry.name):
                    continue
                if entry.name in {m.id for m in self.idle}:
                    continue
                shutil.rmtree(entry, ignore_errors=True)

    def _adopt(self) -> list[Member]:
        """Blocking: the idle members a previous agent left; stale ones are stopped."""
        adopted: list[Member] = []
        now = time.time()
        for found in procs.find_pool_members(self.label, self.dir):
            if found.claimed_by is not None:
                continue  # a UI: the reconciler's
            secret = _read_private(self.dir / found.member / SECRET_FILE)
            member = Member(found.member, found.pid, found.port or 0, secret or "",
                            found.started, found.version)  # fmt: skip
            if secret and found.port and self._fresh(member, now):
                adopted.append(member)
            else:
                procs.stop_process_group(found.pid)
                self.remove_member_dir(found.member)
        self._remove_stale_dirs()
        return adopted

    async def _keep_full(self) -> None:
        self.idle = [*self.idle, *await asyncio.to_thread(self._adopt)]
        # A smaller pool than a previous agent's: the youngest stay, the rest are stopped.
        self.idle.sort(key=lambda m: m.started, reverse=True)
        for extra in self.idle[self.size :]:
            self._retire_later(extra)
        del self.idle[self.size :]
        self._report()
        backoff = 1.0
        while True:
            self._wake.clear()
            if self._version_of is not None:
                self.version = await asyncio.to_thread(self._version_of)
            now = time.time()
            for member in [m for m in self.idle if not self._fresh(m, now)]:
                self.idle.remove(member)
                self._retire_later(member)
            while len(self.idle) < self.size:
                t0 = time.monotonic()
                try:
                    member = await self._start_member()
                except Exception as exc:  # DeployError, or the machine's (ports, files)
                    log.warning("the %s UI pool could not start a member: %s", self.tool, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                backoff = 1.0
                self.idle.append(member)
                self.observer.pool_refilled(self.tool, time.monotonic() - t0)
                self._report()
            # Until a member is taken, or the oldest reaches its age.
            oldest = min((m.started for m in self.idle), default=time.time())
            wait = max(1.0, oldest + self.max_age - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, CHECK_EVERY))

    async def _start_member(self) -> Member:
        member_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(32)
        home = self.dir / member_id
        await asyncio.to_thread(_write_private, home / SECRET_FILE, secret)
        proxy_secret = secrets.token_urlsafe(32)
        await asyncio.to_thread(_write_private, home / PROXY_SECRET_FILE, proxy_secret)
        port = await self.pick_port()
        extra = {
            "IDDS_VIS_UI_LABEL": self.label,
            procs.MEMBER_ENV: member_id,
            procs.VERSION_ENV: self.version,
            "IDDS_VIS_UI_PORT": str(port),
            SECRET_ENV: secret,
        }
        # The spawner drops the proxy secret when there is no web app to proxy (deploy/local.py).
        extra[PROXY_SECRET_ENV] = proxy_secret
        pid = await self.spawn(member_id, port, extra)
        self._starting.add(pid)
        member = Member(member_id, pid, port, secret, time.time(), self.version)
        try:
            await self._wait_idle(member)
        except BaseException:
            await asyncio.to_thread(self._stop_all, [pid], [member_id])
            raise
        finally:
            self._starting.discard(pid)
        # Its age counts from when it could serve: a slow start does not eat into it.
        member.started = time.time()
        return member

    async def _wait_idle(self, member: Member) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        url = member.base(self.host) + STATE_PATH
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, headers={SECRET_HEADER: member.secret}) as r:
                        if r.status == 200:
                            return
                code = await asyncio.to_thread(procs.exit_code, member.pid)
                if code is not None:
                    raise DeployError(f"a pool member exited while starting (code {code})")
                if loop.time() > deadline:
                    raise DeployError(f"a pool member did not listen within {self.start_timeout} s")
                await asyncio.sleep(self.poll_interval)


def remove_member_dir(pool_dir: Path, member_id: str) -> None:
    """Blocking: one member's directory (only a name a member id can have)."""
    if procs.MEMBER_ID.fullmatch(member_id):
        shutil.rmtree(pool_dir / member_id, ignore_errors=True)


def stop_unclaimed_members(label: str, pool_dir: Path) -> None:
    """Blocking: stop the members of ``label`` no instance claimed, and remove their
    directories (at a pool's close, and by a deployer without a pool after a crash)."""
    for found in procs.find_pool_members(label, pool_dir):
        if found.claimed_by is None:
            procs.stop_process_group(found.pid)
            remove_member_dir(pool_dir, found.member)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _read_private(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as found:
        return found.read(4096).strip() or None
