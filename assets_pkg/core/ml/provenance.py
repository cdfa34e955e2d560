"""Where a model came from: the git commit of the code and content hashes of the data."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the code (``unknown`` outside a git checkout), ``+dirty`` if modified.

    Parameters
    ----------
    path : path-like, optional
        A folder inside the checkout (default: this package's folder).
    """
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash(arrays: Iterable[np.ndarray], names: Iterable[str] | None = None) -> str:
    """SHA-256 (hex, first 16 characters) of arrays' shapes, dtypes and bytes, and of their names.

    Two runs trained on the same arrays in the same order get the same hash; any changed pixel,
    label, order or name changes it.

    Parameters
    ----------
    arrays : iterable of ndarray
        The training inputs (images, label images, counts), any shape and dtype.
    names : iterable of str, optional
        Their names, hashed too.
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    for n in names or ():
        h.update(str(n).encode() + b"\0")
    return h.hexdigest()[:16]
