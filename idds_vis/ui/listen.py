"""The listening socket a UI process inherits from the agent (``LISTEN_FD_ENV``).

The local deployer binds and listens on the UI's port itself and passes the socket to the
child: from the moment the agent picks the port, no other local user can bind it, accept the
agent's readiness probes and read the proxy secret they carry (issue 17, red team: a squatter
did so in the seconds MLflow takes to import). Without the variable the UI binds as before
(pods, ``serve-ui`` run by hand).
"""

from __future__ import annotations

import os
import socket

from idds_vis.domain.naming import LISTEN_FD_ENV


def inherited_socket() -> socket.socket | None:
    """The inherited listening socket, once (the variable is removed), or None."""
    value = os.environ.pop(LISTEN_FD_ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
    except ValueError:
        raise SystemExit(f"error: {LISTEN_FD_ENV} is not a descriptor number") from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SystemExit(f"error: no listening socket at descriptor {fd}: {exc.strerror}") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise SystemExit(f"error: descriptor {fd} is not a listening stream socket")
    return sock
