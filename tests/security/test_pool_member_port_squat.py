"""Red team (a local Unix user): the warm pool's variant of the port squat. The pool starts a
member (``--port <p>`` on its command line) and polls ``/.idds-vis/pool`` on that port with
the member's hand-over secret from the first moment, while the member is still importing
MLflow. Whoever binds the port first gets the hand-over secret, lets go, and the real member
listens and joins the pool; with the secret the squatter can take the member's one hand-over
first (a staged directory of another instance, a prefix of their choosing), so the agent's own
hand-over is refused, or, without a web app (no proxy secret), read that instance's data.

Suggested fix: as for the cold UI (test_local_ui_port_squat.py): the agent binds the
member's listening socket itself and passes the descriptor (or a Unix socket in the member's
0700 directory), or ``_wait_idle`` first checks that the member's own pid owns the listening
port before sending ``X-Idds-Vis-Pool-Secret``; a member could also prove itself by answering
an HMAC challenge instead of receiving the secret in clear.

The fix: a member's port is chosen already listening (deploy/local.py ``_member_port``) and the
socket handed to the member; the squatter, trying the port the moment it is chosen, finds it
taken.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from idds_vis.deploy.local import STAND_IN_UI, LocalProcessDeployer
from idds_vis.deploy.pool import SECRET_HEADER, STATE_PATH
from tests.security.test_local_ui_port_squat import squat_every_pick

SLOW_MEMBER = ("-c", "import runpy, sys, time; time.sleep(0.5); sys.argv[0] = 'stub'; "
                     "runpy.run_module('idds_vis.ui.stub', run_name='__main__')", "--pool-member")


async def test_a_squatter_learns_no_hand_over_secret(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = squat_every_pick(monkeypatch)
    deployer = LocalProcessDeployer(tmp_path, label=f"pool-squat-{tmp_path.name}",
                                    ui_argv=STAND_IN_UI, pool_size=1, pool_argv=SLOW_MEMBER,
                                    proxy_base="http://127.0.0.1:9",
                                    poll_interval=0.05)  # fmt: skip
    assert deployer.pool is not None
    try:
        deployer.pool.start()
        async with asyncio.timeout(120):  # a hang guard, not a timing assertion
            await deployer.pool.wait_until(lambda pool: len(pool.idle) == 1)
        member = deployer.pool.idle[0]
        assert squatter.tried == [member.port] and squatter.bound == []
        leaked = [line.split(":", 1)[1].strip() for request in squatter.seen
                  for line in request.split("\r\n")
                  if line.lower().startswith(SECRET_HEADER.lower() + ":")]  # fmt: skip
        if leaked:
            async with aiohttp.ClientSession() as anyone, anyone.get(
                f"http://127.0.0.1:{member.port}{STATE_PATH}", headers={SECRET_HEADER: leaked[0]}
            ) as resp:
                answer = await resp.text()
            pytest.fail("the member's hand-over secret went to whoever listened on its port "
                        f"first; the real member accepts it: HTTP {resp.status} {answer}")
    finally:
        await deployer.close()
