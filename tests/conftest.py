"""Test-session set-up: one JAX compilation cache for the whole run.

Many tests train the same tiny models (in this process and in the CLI and Dagster subprocesses
they start); XLA would compile the same programs again each time.  JAX's persistent cache,
pointed at a fresh folder per session through the environment (so subprocesses share it),
compiles each program once.  It changes no result: a cache hit is the same executable.  A
folder given by the caller (JAX_COMPILATION_CACHE_DIR) is used as it is.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cellscape-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
