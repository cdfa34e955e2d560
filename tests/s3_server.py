"""A real, throw-away S3-compatible server (moto) on loopback for the object-storage tests.

``running_s3()`` starts ``python -m moto.server`` in a subprocess on a free 127.0.0.1 port
(its own process, so a test that keeps the CPU busy does not stall the server), waits until
it answers, yields an :class:`S3Server` and stops the process on exit.  The server keeps
everything in memory: nothing is written to disk and nothing outside loopback is reached.

The credentials are moto's dummies; they travel the way they do against real S3: the
``AWS_*`` environment variables (TensorStore's ``s3`` driver, boto3, DVC's ``s3fs``) -- see
:meth:`S3Server.env`.  Without moto installed :func:`moto_available` is False and callers
skip with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

REGION = "us-east-1"
ACCESS_KEY = "cellscape-test-key"
SECRET_KEY = "cellscape-test-secret"
_buckets = itertools.count()


def moto_available() -> bool:
    """Whether ``moto`` (with its server extra) and ``boto3`` can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "boto3"))


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint on loopback."""

    endpoint: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS clients at this server's credentials.

        ``AWS_EC2_METADATA_DISABLED`` stops SDKs from probing the instance metadata service;
        the variables take precedence over a developer's own ``~/.aws`` files.
        """
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def create_bucket(self, prefix: str = "cellscape") -> str:
        """Create a fresh, empty bucket and return its name."""
        name = f"{prefix}-{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def kvstore_spec(self, bucket: str, path: str = "cellscape/frames/") -> dict:
        """A TensorStore ``s3`` kvstore spec for ``bucket``/``path`` on this server."""
        return {"driver": "s3", "bucket": bucket, "path": path, "endpoint": self.endpoint,
                "aws_region": self.region, "aws_credentials": {"type": "environment"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_s3(timeout: float = 60.0) -> Iterator[S3Server]:
    """Run a moto S3 server on a free loopback port for the duration of the ``with`` block.

    The server's request log goes to a temporary file (a pipe nobody reads would fill up
    and stall it); its tail is in the error when the server does not start.
    """
    with tempfile.TemporaryFile() as log:
        for _attempt in range(3):  # a port taken between choosing and binding: try another
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
            endpoint = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline and not _answers(endpoint):
                time.sleep(0.1)
            if proc.poll() is None and _answers(endpoint):
                break
            proc.kill()
            proc.wait()
        else:
            log.seek(0)
            raise RuntimeError(f"moto S3 server did not start: {log.read().decode(errors='replace')[-2000:]}")
        try:
            yield S3Server(endpoint)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
