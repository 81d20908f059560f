"""Names derived from the idempotency key: DNS-1123 labels, at most 63 characters."""

from __future__ import annotations

import hashlib
import re
import secrets

from idds_vis.domain.errors import InvalidRequest

MAX_NAME = 63
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_TOOL = re.compile(r"^[a-z][a-z0-9]{0,15}$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def instance_name(task_id: str, tool: str) -> str:
    """``<tool>-<slug>-<hash8>``; hashing the raw id keeps ``user.x/y`` and ``user.x.y`` apart."""
    if not task_id:
        raise InvalidRequest("task id is empty")
    if not _TOOL.match(tool):
        raise InvalidRequest(f"tool name {tool!r} is not a short lower-case word")
    digest = hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:8]
    room = MAX_NAME - len(tool) - len(digest) - 2
    slug = _NON_ALNUM.sub("-", task_id.lower()).strip("-")[:room].strip("-") or "task"
    return f"{tool}-{slug}-{digest}"


def is_dns1123_label(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(DNS1123_LABEL.match(name))


def url_prefix(name: str) -> str:
    return f"/vis/{name}"


# The path of a UI (issue 17): ``<tool>-<32 hex>``, 128 random bits made with the instance and
# kept in the ledger, so knowing a task id does not give its UI's URL. Object names (processes,
# Kubernetes objects) stay ``instance_name``: the path token is never derived from it.
PATH_TOKEN = re.compile(r"^[a-z][a-z0-9]{0,15}-[0-9a-f]{32}$")


def new_path_token(tool: str) -> str:
    return f"{tool}-{secrets.token_hex(16)}"


def is_path_token(text: str) -> bool:
    return bool(PATH_TOKEN.match(text))


# The local deployer's UIs answer only the web app's proxy (ui/proxy_guard.py): the header the
# proxy adds with the per-instance secret, and the variable the UI process reads it from.
PROXY_HEADER = "X-Idds-Vis-Proxy"
PROXY_SECRET_ENV = "IDDS_VIS_UI_PROXY_SECRET"
# The UI's listening socket, bound by the agent before the UI starts and inherited by it (its
# descriptor number): no other local user can take the port in the seconds before the UI
# listens and catch the proxy secret the agent's probes send (docs/threat-model.md).
LISTEN_FD_ENV = "IDDS_VIS_UI_LISTEN_FD"
# The UI's path prefix (it holds the instance's unguessable token): in the environment, which
# only the same Unix user reads, never on the command line every user sees in ps.
PREFIX_ENV = "IDDS_VIS_UI_PREFIX"
