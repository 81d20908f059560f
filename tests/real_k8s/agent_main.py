"""``python -m tests.real_k8s.agent_main ARGS``: ``idds-vis ARGS`` with the UIs' public host
mapped to the stand-in ingress on loopback, as an /etc/hosts line and a port forward would.

``$IDDS_VIS_TEST_INGRESS`` is ``HOST=127.0.0.1:PORT``. Only that exact name (of the reserved
``.test`` domain) is mapped, and only to loopback; every other name resolves as usual. The
certificate the ingress shows is trusted through ``$SSL_CERT_FILE`` (the test CA), so the
agent's readiness probe runs unchanged, TLS and all.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def _install() -> None:
    mapping = os.environ.get("IDDS_VIS_TEST_INGRESS", "")
    host, _, target = mapping.partition("=")
    address, _, port = target.rpartition(":")
    if not host.endswith(".test") or address != "127.0.0.1" or not port.isdigit():
        raise SystemExit(f"IDDS_VIS_TEST_INGRESS must be NAME.test=127.0.0.1:PORT, not {mapping!r}")
    real = socket.getaddrinfo

    def getaddrinfo(name: Any, service: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            return real(address, int(port), *args, **kwargs)
        return real(name, service, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


if __name__ == "__main__":
    _install()
    from idds_vis.cli.main import main

    main()
