"""DVC helpers: one pin per plate, the dataset index, and DVC commands that never overlap.

Layout of the pins (what ``cellscape pin`` and the ``dataset_version`` asset write)::

    data/plates/<plate_id>/        a plate folder, tracked by DVC
    data/plates/<plate_id>.dvc     its pin (``dvc add data/plates/<plate_id>``), committed to git
    data/plates.yaml               the dataset index: every pinned plate and its md5 ...
    data.dvc                       ... pinned by the top-level data.dvc, committed to git

So ``dvc pull data/plates/<plate_id>`` fetches one plate, ``dvc pull`` all of them, and
pinning a plate hashes only that plate (plus the small index).  The md5 in ``data.dvc`` (of
the index) names the dataset version as a whole: it changes whenever any plate's pin does.
A repository whose ``data.dvc`` still pins the whole ``data/`` folder (the earlier layout) is
converted by the first :func:`pin_plates`: that pin is removed (the files stay) and every plate
folder gets its own.

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
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import CellscapeError

LOCK_NAME = "cellscape-dvc.lock"
#: The top-level pin of the dataset index, relative to the repository root.
INDEX_DVC = "data.dvc"
#: File name of the dataset index, beside the plates folder (``data/plates`` -> ``data/plates.yaml``).
INDEX_SUFFIX = ".yaml"


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


def dvc_outs(dvc_file: str | Path) -> list[Path]:
    """The absolute paths a ``.dvc`` file tracks (its ``outs``, relative to its folder)."""
    dvc_file = Path(dvc_file)
    try:
        doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
        return [(dvc_file.parent / o["path"]).resolve() for o in doc.get("outs", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise CellscapeError(f"cannot read the tracked paths ({e})", path=dvc_file, field="outs") from e


def dvc_file_for(path: str | Path) -> Path | None:
    """The ``.dvc`` file that pins ``path``: ``<A>.dvc`` beside the nearest ancestor ``A`` of
    ``path`` (``path`` itself included) whose outputs hold ``path``, below the DVC repository
    root; None when nothing pins it (no repository, or no ``.dvc`` file covers it).

    ``data/plates/p1`` is pinned by ``data/plates/p1.dvc`` (one pin per plate) or, in the
    earlier layout, by ``data.dvc`` tracking ``data/``; the plates folder as a whole is pinned
    by no single file (``data.dvc`` now tracks only the index ``data/plates.yaml``).
    """
    p = Path(path).resolve()
    try:
        root = find_repo_root(p if p.is_dir() else p.parent)
    except CellscapeError:
        return None
    for a in (p, *p.parents):
        if a == root or root not in a.parents:
            return None
        cand = a.parent / (a.name + ".dvc")
        if cand.is_file() and any(o == p or o in p.parents for o in dvc_outs(cand)):
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
        return None, f"{dvc_file.name} does not match the data on disk (pin it again: cellscape pin {path})"
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
        return _dvc(args, repo_root, check)


def _dvc(args: list[str], repo_root: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """:func:`run_dvc` for a caller that already holds the lock (a sequence of DVC commands)."""
    proc = subprocess.run([dvc_executable(), *args], cwd=repo_root, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise CellscapeError(
            f"dvc {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}",
            path=repo_root,
        )
    return proc


# ---------------------------------------------------------------------- one pin per plate
@dataclass(frozen=True)
class PinResult:
    """What :func:`pin_plates` did.

    ``plates`` maps each plate pinned now to its md5 (DVC's ``.dir`` md5), ``dataset_md5`` is
    the md5 of the index that ``data.dvc`` pins, ``dvc_files`` are the files to commit to git,
    ``converted`` says that ``data.dvc`` pinned the whole data folder and was replaced.
    """

    plates: dict[str, str]
    dataset_md5: str
    index: Path
    dvc_files: list[Path] = field(default_factory=list)
    converted: bool = False
    pushed: bool = False


def plate_pins(plates_dir: str | Path) -> dict[str, dict]:
    """Every plate pinned under ``plates_dir``: ``{plate_id: {"md5", "nfiles", "size"}}``.

    Read from the ``<plate_id>.dvc`` files directly in ``plates_dir`` (one output each, the
    folder beside it).
    """
    out = {}
    for f in sorted(Path(plates_dir).glob("*.dvc")):
        try:
            (o,) = yaml.safe_load(f.read_text(encoding="utf-8"))["outs"]
            if o["path"] != f.stem:
                raise ValueError(f"tracks {o['path']!r}, not the folder {f.stem!r} beside it")
            out[f.stem] = {"md5": str(o["md5"]), "nfiles": o.get("nfiles"), "size": o.get("size")}
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            raise CellscapeError(f"not a plate pin ({e})", path=f, field="outs") from e
    return out


def index_document(pins: dict[str, dict]) -> str:
    """The text of the dataset index for ``pins`` (:func:`plate_pins`): deterministic YAML."""
    head = "# Pinned plates and their DVC md5 (written by `cellscape pin`; pinned by data.dvc).\n"
    return head + yaml.safe_dump({"plates": pins}, sort_keys=True, default_flow_style=False)


def _plates_folder(plate_dirs: Iterable[str | Path]) -> tuple[list[Path], Path, Path]:
    """(plate folders, the one plates folder holding them, the DVC repository root)."""
    dirs = sorted({Path(d).resolve() for d in plate_dirs})
    if not dirs:
        raise CellscapeError("no plate folder given")
    for d in dirs:
        if not d.is_dir():
            raise CellscapeError("not a plate folder", path=d)
    parents = sorted({d.parent for d in dirs})
    if len(parents) != 1:
        raise CellscapeError(f"plates to pin must lie in one plates folder, got {[str(p) for p in parents]}",
                             path=parents[0])
    root = find_repo_root(parents[0])
    if root == parents[0]:
        raise CellscapeError("the plates folder must be below the DVC repository root", path=parents[0])
    return dirs, parents[0], root


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def covers(dvc_file: str | Path, path: str | Path) -> bool:
    """Whether one of the outputs of ``dvc_file`` is ``path`` or a folder above it."""
    path = Path(path).resolve()
    return any(o == path or o in path.parents for o in dvc_outs(dvc_file))


def _write_index(index: Path, pins: dict[str, dict]) -> None:
    """Replace the index file atomically (a temporary beside it, then a rename)."""
    index.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{index.name}.", dir=index.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(index_document(pins))
    os.replace(tmp, index)


def pin_plates(plate_dirs: Iterable[str | Path], push: bool = False,
               index_dvc: str | Path | None = None) -> PinResult:
    """Pin each plate folder with its own ``.dvc`` file and re-pin the dataset index.

    ``dvc add`` runs on the given plates only (one command), so the cost does not grow with
    the number of plates already pinned; the index (``<plates folder>.yaml``, see the module
    notes) is rewritten from every ``<plate>.dvc`` beside them and committed through
    ``data.dvc``.  A ``data.dvc`` that still pins the folder holding the plates is replaced
    first (every plate folder there is then pinned).  Raw data are only read.

    Parameters
    ----------
    plate_dirs : iterable of path-like
        Plate folders, all in one plates folder inside a DVC repository.
    push : bool
        Also ``dvc push`` the plates pinned now and the index to the default remote.
    index_dvc : path-like, optional
        The dataset pin (default: ``data.dvc`` at the repository root).

    Returns
    -------
    PinResult
    """
    from ..imaging.plates import list_plates

    dirs, plates_dir, root = _plates_folder(plate_dirs)
    index_dvc = root / INDEX_DVC if index_dvc is None else (root / index_dvc).resolve()
    with dvc_lock(root):  # the whole sequence: a concurrent pin would rewrite the index under us
        converted = index_dvc.is_file() and covers(index_dvc, plates_dir)
        if converted:  # the earlier layout: one pin of the whole data folder
            _dvc(["remove", _rel(index_dvc, root)], root)
            dirs = sorted(set(dirs) | {p.resolve() for p in list_plates(plates_dir, complete_only=False)})
        _dvc(["add", *(_rel(d, root) for d in dirs)], root)
        index = _index_of(index_dvc, plates_dir)
        pins = plate_pins(plates_dir)
        _write_index(index, pins)
        _dvc(["commit", "-f", _rel(index_dvc, root)], root)
        files = [d.parent / (d.name + ".dvc") for d in dirs] + [index_dvc]
        if push:
            _dvc(["push", *(_rel(f, root) for f in files)], root)
    return PinResult(plates={d.name: pins[d.name]["md5"] for d in dirs}, dataset_md5=dataset_md5(index_dvc),
                     index=index, dvc_files=files, converted=converted, pushed=push)


def _index_of(index_dvc: Path, plates_dir: Path) -> Path:
    """The index file ``index_dvc`` pins; a new ``index_dvc`` pins ``<plates folder>.yaml``."""
    if not index_dvc.is_file():
        index = plates_dir.parent / (plates_dir.name + INDEX_SUFFIX)
        rel = Path(os.path.relpath(index, index_dvc.parent)).as_posix()
        index_dvc.write_text(f"outs:\n- path: {rel}\n", encoding="utf-8")
        return index
    outs = dvc_outs(index_dvc)
    if len(outs) != 1 or outs[0].is_dir():
        raise CellscapeError(f"must pin one index file, pins {[str(o) for o in outs]}", path=index_dvc, field="outs")
    return outs[0]


def dataset_pin(plate_dirs: Iterable[str | Path], index_dvc: str | Path | None = None) -> tuple[str | None, str]:
    """The dataset md5 (of ``data.dvc``) when it holds these plates as they are on disk now.

    Returns ``(md5, "pinned")``, or ``(None, reason)``: a plate without its pin, an index that
    does not list the plates' pins, or ``dvc status`` finding a pinned file changed.  In the
    earlier layout (``data.dvc`` pins the folder holding the plates) it is :func:`pinned_md5`
    of that folder.
    """
    try:
        dirs, plates_dir, root = _plates_folder(plate_dirs)
    except CellscapeError as e:  # no DVC repository around the plates: unpinned, not an error here
        if "no DVC repository" not in str(e):
            raise
        return None, str(e)
    index_dvc = root / INDEX_DVC if index_dvc is None else (root / index_dvc).resolve()
    if not index_dvc.is_file():
        return None, f"{index_dvc} is missing (run cellscape pin on the plates)"
    if covers(index_dvc, plates_dir):
        return pinned_md5(plates_dir)
    unpinned = [d.name for d in dirs if not (d.parent / (d.name + ".dvc")).is_file()]
    if unpinned:
        return None, f"plates {unpinned} have no .dvc file (run cellscape pin on them)"
    index = _index_of(index_dvc, plates_dir)
    try:
        listed = (yaml.safe_load(index.read_text(encoding="utf-8")) or {}).get("plates")
    except (OSError, yaml.YAMLError) as e:
        return None, f"cannot read the dataset index {index}: {e}"
    if listed != plate_pins(plates_dir):
        return None, f"{index.name} does not list the plates' current pins (run cellscape pin)"
    targets = [_rel(index_dvc, root), *(_rel(d.parent / (d.name + ".dvc"), root) for d in dirs)]
    proc = run_dvc(["status", "--json", *targets], root, check=False)
    if proc.returncode != 0:
        return None, f"dvc status failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
    if proc.stdout.strip() not in ("", "{}"):
        return None, f"pinned data changed on disk since the pin: {proc.stdout.strip()[:300]} (run cellscape pin)"
    return dataset_md5(index_dvc), "pinned"


def push_pins(plate_dirs: Iterable[str | Path], index_dvc: str | Path | None = None) -> None:
    """``dvc push`` the dataset pin (``data.dvc``) and the pins of these plates that exist."""
    dirs, _, root = _plates_folder(plate_dirs)
    index_dvc = root / INDEX_DVC if index_dvc is None else (root / index_dvc).resolve()
    pins = [p for p in (d.parent / (d.name + ".dvc") for d in dirs) if p.is_file()]
    run_dvc(["push", *(_rel(f, root) for f in [index_dvc, *pins])], root)
