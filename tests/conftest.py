"""Test-session set-up: one JAX compilation cache for the whole run.

Many tests train the same tiny models (in this process and in the CLI and Dagster subprocesses
they start); XLA would compile the same programs again each time.  JAX's persistent cache,
pointed at a fresh folder per session through the environment (so subprocesses share it),
compiles each program once.  It changes no result: a cache hit is the same executable.  A
folder given by the caller (JAX_COMPILATION_CACHE_DIR) is used as it is.

Object storage: ``s3_server`` is one moto S3 server per session (``tests/s3_server.py``),
``s3`` points the AWS credential variables at it for one test and returns it.
"""

import atexit
import os
import shutil
import tempfile

import pytest
from s3_server import moto_available, running_s3

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cellscape-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback for the whole session (skipped without moto)."""
    if not moto_available():
        pytest.skip("moto[server] and boto3 are not installed (pip install -r requirements.txt)")
    with running_s3() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's S3 server, with its credentials in the environment of this test."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server
