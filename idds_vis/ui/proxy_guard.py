"""The UI process answers only the web app's proxy (issue 17): every HTTP request must carry
the per-instance secret in ``X-Idds-Vis-Proxy``, else it is refused 403 before the read-only
gate or MLflow sees it.

The local deployer makes the secret when it starts the UI (``deploy/local.py``: kept 0600 in
the instance's state directory, handed to the process in its environment, never on its command
line) and the web app's ``/vis/<path>/`` proxy adds it to each request it passes on. The UI
listens on loopback too, so a browser never reaches it but through the proxy, which checks who
is asking first. Behind nginx forward-auth (Kubernetes) the UI gets, through nginx, what
``/auth/check`` answered: a short-lived proof of the secret (``domain/proxy_tokens.py``), never
the secret itself. Without a secret in the environment the guard lets everything through.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from idds_vis.domain.naming import PROXY_HEADER, PROXY_SECRET_ENV
from idds_vis.domain.proxy_tokens import is_proof

HEADER = PROXY_HEADER.lower()
SECRET_ENV = PROXY_SECRET_ENV
_REFUSAL = b"this UI answers only through the idds-vis web app\n"


class ProxyGuard:
    def __init__(self, app: Any, secret: str | None) -> None:
        self.app = app
        self.secret = secret.encode() if secret else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.secret is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan, or no guard configured
            return
        sent = [value for name, value in scope.get("headers", ()) if name == HEADER.encode()]
        if len(sent) == 1 and (hmac.compare_digest(sent[0], self.secret)
                               or is_proof(self.secret, sent[0], time.time())):  # fmt: skip
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(_REFUSAL)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": _REFUSAL})
