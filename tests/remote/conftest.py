"""Fixtures: a real HTTP server on 127.0.0.1 (a thread of this process) and a real
S3-compatible server (moto's server mode, a process of its own) with IAM auth enforced."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .server import Server

pytest.importorskip("urllib3")


@pytest.fixture
def http() -> Iterator[Server]:
    with Server() as srv:
        yield srv


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` seeded random bytes (1 MiB of randomness repeated with a shifting key)."""
    block = random.Random(seed).randbytes(min(n, 1 << 20))
    if n <= len(block):
        return block
    out = bytearray(n)
    for i in range(0, n, len(block)):
        piece = bytes((b + i // len(block)) & 0xFF for b in block[:64]) + block[64:]
        out[i : i + len(block)] = piece[: n - i]
    return bytes(out)


S3_SETUP = 5  # unauthenticated actions moto allows: the fixture's own setup below
BUCKET = "shmstore-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server process; one object ``s3://shmstore-test/obj`` (300 KiB); credentials
    of an IAM user allowed s3:* in ``creds``; any other key is denied."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(S3_SETUP),
               AWS_ACCESS_KEY_ID="setup", AWS_SECRET_ACCESS_KEY="setup",
               AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the server's socket (polling a real process's readiness)
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        ep = f"http://127.0.0.1:{port}"
        kw = {"endpoint_url": ep, "region_name": "us-east-1", "aws_access_key_id": "setup",
              "aws_secret_access_key": "setup"}
        c = boto3.client("s3", **kw)
        c.create_bucket(Bucket=BUCKET)
        data = payload(300 << 10, 3)
        c.put_object(Bucket=BUCKET, Key="obj", Body=data)
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield {"endpoint": ep, "data": data, "creds": {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1"}}
    finally:
        proc.terminate()
        proc.wait(10)
