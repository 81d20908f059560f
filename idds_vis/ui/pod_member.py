"""A standby UI pod's member mode (issue 18, EXPERIMENTAL): the Kubernetes counterpart of
``ui/pool_member.py``. The pod starts with MLflow imported and listening and no data; the agent
(``deploy/kubernetes/standby.py``) claims it for one instance and makes one authenticated call
over the pod network, ``POST /.idds-vis/handover`` with the pod's secret (from its own Secret,
``secretKeyRef``) and::

    {"instance": "<name>", "prefix": "/vis/<…>", "source": "<the raw source>",
     "env": {} (never credentials: a source that needs some starts cold),
     "guard": <bool: a broker message named the source>,
     "allow_private_addresses": [<the agent's list>], "proxy_secret": "<optional>"}

The pod then stages the source itself, as ``serve-ui`` does in a cold pod: under the address
guard when asked, with no credentials, within ``--max-bytes``/``--max-files``; then it
prepares the read-only store and serves it under the instance's prefix, behind the read-only
gate (and the proxy guard). It accepts exactly one hand-over; a second gets 409, one without
the secret 403.

``python -m idds_vis.ui.pod_member --port 5000 --workdir /data/ui [--host …]
[--allowed-host …] [--cors-origin …] [--max-bytes N] [--max-files N]`` (the standby pod's
command). MLflow's allowed hosts are fixed when its app is built, before the pod knows its
instance: the agent lists its namespace's Service hosts as a pattern (``*.<ns>.svc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idds_vis.domain.source_policy import AddressPolicy, PolicyError
from idds_vis.ui.handover import SECRET_ENV, Handover, Refused
from idds_vis.ui.pool_member import Member, _prepare, load_mlflow
from idds_vis.ui.readonly_gate import check_prefix
from idds_vis.ui.uvicorn_server import add_listen_arguments, serve_asgi


@dataclass(frozen=True)
class PodAssignment:
    prefix: str
    source: str
    env: dict[str, str]
    guard: AddressPolicy | None
    proxy_secret: str | None


class PodHandover(Handover):
    """The secret check and the single hand-over of ``Handover``, for a source to stage."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret, Path("/nonexistent"))  # no staged directory is ever accepted

    def accept(self, body: bytes) -> Any:
        raise Refused(400, "a standby pod stages its source: the hand-over names one")

    def accept_pod(self, body: bytes) -> PodAssignment:
        self.take_once(body)
        try:
            data = json.loads(body)
        except ValueError:
            raise Refused(400, "the hand-over is not JSON") from None
        if not isinstance(data, dict):
            raise Refused(400, "the hand-over is not a JSON object")
        prefix, source = data.get("prefix"), data.get("source")
        if not isinstance(prefix, str) or not isinstance(source, str) or not source:
            raise Refused(400, "the hand-over names no prefix and source")
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        # This process goes on to run MLflow on the staged (hostile) store, where a cold pod's
        # serve-ui execs MLflow without its credentials: a standby pod takes none, and the
        # agent starts a source that needs some cold (deploy/kubernetes/deployer.py).
        env = data.get("env") or {}
        if env != {}:
            raise Refused(400, "a standby pod takes no credentials (such a source starts cold)")
        guard = None
        if data.get("guard", False) is not False:
            if data["guard"] is not True:
                raise Refused(400, "the hand-over's guard is not a boolean")
            allowed = data.get("allow_private_addresses") or []
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise Refused(400, "the hand-over's allow_private_addresses is not a list")
            try:
                guard = AddressPolicy.from_setting(allowed)
            except PolicyError as exc:
                raise Refused(400, f"allow_private_addresses: {exc}") from None
        proxy_secret = data.get("proxy_secret")
        if proxy_secret is not None and (not isinstance(proxy_secret, str) or not proxy_secret):
            raise Refused(400, "the hand-over's proxy_secret is not a string")
        return PodAssignment(prefix, source, dict(env), guard, proxy_secret)


class PodMember(Member):
    def __init__(
        self,
        mlflow_app: Any,
        handover: PodHandover,
        host: str,
        workdir: Path,
        max_bytes: int,
        max_files: int,
    ) -> None:
        super().__init__(mlflow_app, handover, None, host)
        self.pod_handover = handover
        self.workdir = workdir
        self.max_bytes = max_bytes
        self.max_files = max_files

    async def take(self, body: bytes) -> str:
        assignment = self.pod_handover.accept_pod(body)
        self.state = "preparing"
        self.proxy_secret = assignment.proxy_secret  # behind the web app: its proxy only
        await asyncio.to_thread(self._stage_and_prepare, assignment)
        return assignment.prefix

    def _stage_and_prepare(self, assignment: PodAssignment) -> None:
        """Blocking: stage the source as serve-ui does, then prepare the read-only store."""
        from idds_vis.ui.serve import stage_source

        work = self.workdir / "instance"
        work.mkdir(mode=0o700, parents=True, exist_ok=False)
        staged = stage_source(assignment.source, work, self.max_bytes, self.max_files,
                              assignment.guard, assignment.env)  # fmt: skip
        _prepare(Path(staged.root).resolve())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idds_vis.ui.pod_member")
    add_listen_arguments(parser, host="0.0.0.0")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--max-files", type=int, default=20_000)
    args = parser.parse_args(argv)
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        raise SystemExit(f"error: a standby pod needs {SECRET_ENV} in its environment")
    handover = PodHandover(secret)
    args.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mlflow_app, _run_dir = load_mlflow(args.host, args.workdir, args.allowed_host, args.cors_origin)
    member = PodMember(mlflow_app, handover, args.host, args.workdir.resolve(),
                       args.max_bytes, args.max_files)  # fmt: skip
    serve_asgi(member, args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
