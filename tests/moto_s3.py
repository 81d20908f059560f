"""A real S3 protocol server for tests: moto in server mode on 127.0.0.1.

``strict``: IAM auth on. ``INITIAL_NO_AUTH_ACTION_COUNT`` lets the first three calls through
unauthenticated (create a user, its access key, its policy); from then on every request must be
signed with that key, so a wrong key really is refused by signature checking, as AWS, MinIO or
Ceph would. But moto 5.2 checks signatures against the decoded URL, so any request with a '/'
in its query (a listing by prefix) fails with SignatureDoesNotMatch however right the key
(getmoto/moto#5948): prefix listings are tested against a server with auth off, which still
speaks the whole S3 protocol and gets signed requests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3

BUCKET = "task-artefacts"
_POLICY = {"Version": "2012-10-17",
           "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def client(self, key_id: str | None = None, secret: str | None = None) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key_id or self.access_key_id,
            aws_secret_access_key=secret or self.secret_access_key,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet, bounded by the deadline
    raise RuntimeError("moto server did not listen within the deadline")


def run_s3_server(*, strict: bool) -> Iterator[S3Server]:
    port = _free_port()
    env = dict(os.environ)
    if strict:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, proc, time.monotonic() + 60)
        endpoint = f"http://127.0.0.1:{port}"
        if not strict:
            server = S3Server(endpoint, "AKIAOPENSERVER000000", "open-server-secret")
            server.client().create_bucket(Bucket=BUCKET)
            yield server
            return
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")  # fmt: skip
        iam.create_user(UserName="idds-vis")
        key = iam.create_access_key(UserName="idds-vis")["AccessKey"]
        iam.put_user_policy(
            UserName="idds-vis", PolicyName="s3", PolicyDocument=json.dumps(_POLICY)
        )
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
