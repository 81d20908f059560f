"""Red team (a local Unix user on the agent's machine): the local deployer picks a loopback
port, starts the UI process on it (the port is on its command line, readable by every user in
/proc/<pid>/cmdline), and probes it at once with the UI's per-instance proxy secret
(``X-Idds-Vis-Proxy``) — while the UI is still importing MLflow and not yet listening. Any
local user who binds that port first receives the secret, lets go of the port, and the real UI
binds and becomes ready. With the secret, the user reads the UI directly on loopback, past the
web app's access check (owner, groups, visibility, share links): the proxy guard is void.

The squatter here binds the picked port as such a user would on seeing the new process; the UI
(the stand-in) starts half a second late, as MLflow's import makes a real one.

Suggested fix: never let the port be free between the agent's choice and the UI's listen.
Bind and listen on the loopback socket in the agent, then hand the listening descriptor to the
child (``pass_fds`` + uvicorn's ``fd=``/``--fd``, http.server's socket in the stand-in), or
put the web app -> UI hop on a Unix domain socket inside the 0700 instance directory
(``aiohttp.UnixConnector``, uvicorn ``uds=``). Until then, at least send no secret to a port
until the listener is proven to be the child (psutil ``Process(pid).net_connections()`` shows
the port), in ``wait_started``, the readiness probe and the pool's ``_wait_idle``.

The fix (deploy/local_ports.listening_socket, ui/listen.py): the agent binds and listens
before anyone can learn the port and hands the socket to the UI; the squatter here tries the
port the moment it is chosen (earlier than any local user could see it) and must find it taken.
On the code before the fix the squatter got the port and the secret.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from idds_vis.deploy import local as local_module
from idds_vis.domain.naming import PROXY_HEADER
from tests.security.test_ui_access_local import LocalSite, jane_with_her_ui, local_site

# The stand-in UI, starting late (a real UI imports MLflow for seconds before it listens).
SLOW_UI = ("-c", "import runpy, sys, time; time.sleep(0.5); sys.argv[0] = 'stub'; "
                 "runpy.run_module('idds_vis.ui.stub', run_name='__main__')")


class Squatter:
    """Binds a port, keeps the headers of the first request, answers 503, lets the port go."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.tried: list[int] = []
        self.bound: list[int] = []

    def squat(self, port: int) -> None:
        self.tried.append(port)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            return
        self.bound.append(port)
        listener.listen(8)
        listener.settimeout(5)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(2)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.seen.append(data.decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    # Reset, not close: no TIME_WAIT left on the port for the real UI to trip on.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            finally:
                listener.close()  # the port is free again: the real UI binds it

        threading.Thread(target=serve, daemon=True).start()


def squat_every_pick(monkeypatch: pytest.MonkeyPatch) -> Squatter:
    """A squatter that tries each port the local deployer picks, as soon as it is picked."""
    squatter = Squatter()
    real_pick = local_module.pick_and_listen

    def pick_and_squat(*args: object, **kwargs: object) -> socket.socket:
        listener = real_pick(*args, **kwargs)  # type: ignore[arg-type]
        # What a local user does on seeing `--port <port>` in /proc, here even sooner.
        squatter.squat(int(listener.getsockname()[1]))
        return listener

    monkeypatch.setattr(local_module, "pick_and_listen", pick_and_squat)
    return squatter


@pytest_asyncio.fixture
async def squatted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> AsyncIterator[tuple[LocalSite, Squatter]]:  # fmt: skip
    squatter = squat_every_pick(monkeypatch)
    async with local_site(tmp_path, f"ui-squat-{tmp_path.name}", SLOW_UI,
                          probe_interval=0.1) as site:  # fmt: skip
        yield site, squatter


async def test_a_local_user_squatting_the_port_learns_no_proxy_secret(
    squatted: tuple[LocalSite, Squatter],
) -> None:
    web, squatter = squatted
    async with jane_with_her_ui(web) as (_jane, inst):
        assert squatter.tried == [inst.handle["port"]]  # the squatter knew the port...
        assert squatter.bound == []  # ...and could not take it: the agent held it already
        leaked = [line.split(":", 1)[1].strip() for request in squatter.seen
                  for line in request.split("\r\n")
                  if line.lower().startswith(PROXY_HEADER.lower() + ":")]  # fmt: skip
        # What the squatter can do with it: read Jane's UI directly, no identity at all.
        if leaked:
            direct = f"http://127.0.0.1:{inst.handle['port']}{inst.prefix}/"
            async with aiohttp.ClientSession() as anyone, anyone.post(
                direct + "ajax-api/2.0/mlflow/experiments/search", json={},
                headers={PROXY_HEADER: leaked[0]},
            ) as resp:
                body = await resp.text()
            pytest.fail(f"the UI's proxy secret went to whoever listened on its port first; "
                        f"with it, a direct request got HTTP {resp.status}: {body[:80]}")
