"""DVC helpers: the pinned dataset version, and DVC commands that never run concurrently.

DVC holds a repository lock while it works and a second DVC command in the same repository
fails on it, so every DVC call from Cellscape (CLI, assets, set-up script) goes through
:func:`run_dvc`, which serialises on an advisory file lock first.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from ..errors import CellscapeError

LOCK_NAME = "cellscape-dvc.lock"


def find_repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``dvc.yaml`` or ``.dvc``."""
    p = Path(start or os.getcwd()).resolve()
    for cand in (p, *p.parents):
        if (cand / ".dvc").is_dir() or (cand / "dvc.yaml").is_file():
            return cand
    raise CellscapeError("no DVC repository (.dvc/ or dvc.yaml) at or above this folder", path=p)


def dataset_md5(dvc_file: str | Path) -> str:
    """The md5 DVC pinned for a tracked path (for a folder, DVC's ``.dir`` md5).

    Parameters
    ----------
    dvc_file : path-like
        A ``.dvc`` file such as ``data.dvc``.

    Returns
    -------
    str
        The md5 of its first output, e.g. ``"3f2a...e1.dir"``.
    """
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        raise CellscapeError("DVC file is missing", path=dvc_file)
    try:
        doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        md5 = doc["outs"][0]["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise CellscapeError(f"cannot read the pinned md5 ({e})", path=dvc_file, field="outs[0].md5") from e
    return str(md5)


def dvc_file_for(path: str | Path) -> Path | None:
    """The ``.dvc`` file that pins ``path``: ``<A>.dvc`` beside the nearest ancestor ``A`` of
    ``path`` (``path`` itself included) that has one, below the DVC repository root; None when
    nothing pins it (no repository, or no ``.dvc`` file covers it)."""
    p = Path(path).resolve()
    try:
        root = find_repo_root(p if p.is_dir() else p.parent)
    except CellscapeError:
        return None
    for a in (p, *p.parents):
        if a == root or root not in a.parents:
            return None
        cand = a.parent / (a.name + ".dvc")
        if cand.is_file():
            return cand
    return None


def pinned_md5(path: str | Path) -> tuple[str | None, str]:
    """The DVC md5 of the pinned data that holds ``path`` as it is on disk now.

    Returns ``(md5, why)``: the md5 of the covering ``.dvc`` file when ``dvc status`` says the
    data on disk matches it, else ``(None, reason)`` -- unpinned, or changed since the pin (a
    recorded md5 must name data that contains what was read).  The repository is the one that
    holds ``path``, not the one around the working directory.
    """
    dvc_file = dvc_file_for(path)
    if dvc_file is None:
        return None, f"{path} is not pinned by any .dvc file"
    root = find_repo_root(dvc_file.parent)
    proc = run_dvc(["status", "--json", str(dvc_file.relative_to(root))], root, check=False)
    if proc.returncode != 0:
        return None, f"dvc status failed on {dvc_file}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    if proc.stdout.strip() not in ("", "{}"):
        return None, f"{dvc_file.name} does not match the data on disk (run dvc add {dvc_file.stem})"
    return dataset_md5(dvc_file), "pinned"


def dataset_md5_or_none(repo_root: str | Path | None = None, name: str = "data.dvc") -> str | None:
    """:func:`dataset_md5` of ``<repo_root>/data.dvc``, or None where there is no such file."""
    try:
        root = Path(repo_root) if repo_root is not None else find_repo_root()
    except CellscapeError:
        return None
    f = root / name
    return dataset_md5(f) if f.is_file() else None


@contextmanager
def dvc_lock(repo_root: str | Path):
    """Hold the repository's DVC lock (blocking) for the duration of the ``with`` block."""
    lock_dir = Path(repo_root) / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / LOCK_NAME, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dvc_executable() -> str:
    """The ``dvc`` next to the running interpreter (the project venv), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    if here.exists():
        return str(here)
    found = shutil.which("dvc")
    if found is None:
        raise CellscapeError("the dvc command is not installed in this environment")
    return found


def run_dvc(args: list[str], repo_root: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc <args>`` in ``repo_root`` under the repository's DVC lock.

    Returns the completed process (stdout/stderr captured as text); raises
    :class:`CellscapeError` with DVC's own message when ``check`` and DVC fails.
    """
    with dvc_lock(repo_root):
        proc = subprocess.run(
            [dvc_executable(), *args], cwd=repo_root, capture_output=True, text=True, check=False
        )
    if check and proc.returncode != 0:
        raise CellscapeError(
            f"dvc {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}",
            path=repo_root,
        )
    return proc
