"""One folder format for every trained model: Orbax parameters plus one JSON record.

A model folder holds::

    model.json           the truth: format, kind, architecture, config, provenance (data,
                         dataset md5, split version, git commit), history, metrics, step,
                         and "params": the name of the parameter folder
    params-<token>/      Orbax StandardCheckpointer tree of the parameters
    checkpoints/         training checkpoints (see :mod:`assets_pkg.core.ml.loop`)
    ...                  exports a model family adds (figures, CSV/JSON summaries)

Saving is atomic: the parameters go to a new ``params-<token>/`` folder, then ``model.json``
(which names it) is replaced in one ``os.replace``, then the old parameter folder is removed.
A failure before that replace leaves the previous model readable and whole.  Reading parses
JSON and restores arrays; nothing is ever unpickled.  In a multi-process JAX run each call
involves the calling process alone (process 0 writes the model; any process may read one).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CellscapeError

MODEL_FILE = "model.json"
FORMAT = 2
#: Entries a folder may hold before its first model is saved (a training run's work).
WORK_ENTRIES = ("checkpoints",)
#: Keys every record has.
RECORD_KEYS = ("kind", "architecture", "config", "provenance", "history", "metrics")


class ModelFileError(CellscapeError):
    """A model folder is missing, incomplete, of another format or kind, or not a model folder."""


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(obj) -> str:
    """JSON text of a record (NumPy scalars and arrays, paths converted)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and one ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | Path) -> Path:
    """The absolute model folder path, after checking a model may be written there.

    A missing folder, an empty one, a model folder, or a folder holding only a training run's
    work (:data:`WORK_ENTRIES`, dot files) or stale ``params-*`` folders (a model whose
    ``model.json`` a pipeline tool removed) may be written; anything else is refused so that no
    data folder is overwritten.

    Raises
    ------
    ModelFileError
        ``path`` is a file, or a folder holding something else.
    """
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise ModelFileError("refusing to replace a file with a model folder (not a model folder)", path=path)
    if path.is_dir() and not (path / MODEL_FILE).is_file():
        other = [p.name for p in path.iterdir()
                 if p.name not in WORK_ENTRIES and not p.name.startswith((".", "params-"))]
        if other:
            raise ModelFileError(f"refusing to write into a folder that is not a model folder (holds {other[:3]})",
                                 path=path)
    return path


def _checkpointer():
    """An Orbax StandardCheckpointer that involves this process alone, also in a multi-process run."""
    import jax
    import orbax.checkpoint as ocp

    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


def write_record(path: Path, record: dict) -> None:
    """Replace ``path/model.json`` atomically with ``record``."""
    atomic_write_text(Path(path) / MODEL_FILE, to_json(record))


def save(path: str | Path, params: Any, record: dict) -> Path:
    """Write a model: parameters and ``model.json``, atomically (see the module docstring).

    Parameters
    ----------
    path : path-like
        The model folder (created if missing; see :func:`check_writable`).
    params : pytree of arrays
        NumPy or addressable jax arrays (in a multi-process run, ``jax.device_get`` them).
    record : dict
        JSON-able; must hold :data:`RECORD_KEYS`. ``format`` and ``params`` are set here.

    Returns
    -------
    Path
        The absolute folder path.
    """
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"a model record needs {missing}")
    path = check_writable(path)
    path.mkdir(parents=True, exist_ok=True)
    name = f"params-{uuid.uuid4().hex[:12]}"
    try:
        ckptr = _checkpointer()
        ckptr.save(path / name, params)
        ckptr.wait_until_finished()
        write_record(path, {"format": FORMAT, **record, "params": name})
    except BaseException:
        shutil.rmtree(path / name, ignore_errors=True)
        raise
    for stale in path.glob("params-*"):  # the replaced model's parameters, or leftovers
        if stale.name != name:
            shutil.rmtree(stale, ignore_errors=True)
    return path


def read_record(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """The ``model.json`` of a model folder, checked for its format and (optionally) kind.

    Parameters
    ----------
    path : path-like
    kind : str or tuple of str, optional
        Accept only these kinds.

    Raises
    ------
    ModelFileError
        No or unreadable ``model.json``, another format, or another kind.
    """
    path = Path(path)
    f = path / MODEL_FILE
    if not f.is_file():
        raise ModelFileError(f"not a model folder (no {MODEL_FILE})", path=path)
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"unreadable model record ({e})", path=f) from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else None
        raise ModelFileError(f"unsupported model format {got!r} (expected {FORMAT})", path=f, field="format")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and record.get("kind") not in kinds:
        want = " or ".join(kinds)
        raise ModelFileError(f"expected a {want} model, found a {record.get('kind')!r} model (kind)", path=f,
                             field="kind")
    return record


def load_params(path: str | Path, record: dict, abstract: Any = None) -> Any:
    """Restore the parameters a record names.

    Parameters
    ----------
    path : path-like
        The model folder.
    record : dict
        Its record (:func:`read_record`).
    abstract : pytree of jax.ShapeDtypeStruct, optional
        The expected tree (from the recorded architecture); a mismatch is an error. Without it
        the arrays are restored as saved.

    Raises
    ------
    ModelFileError
        Missing parameters or a tree that does not match ``abstract``.
    """
    where = Path(path).resolve() / str(record.get("params"))
    if not where.is_dir():
        raise ModelFileError("the parameters named by model.json are missing", path=where, field="params")
    ckptr = _checkpointer()
    try:
        if abstract is None:
            return ckptr.restore(where)
        saved = _shapes(ckptr.metadata(where).item_metadata.tree)
        if saved != _shapes(abstract):  # orbax would restore other shapes without a word
            raise ValueError(f"saved tree {saved} differs from the architecture's {_shapes(abstract)}")
        return ckptr.restore(where, abstract)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:  # orbax's errors for unreadable trees
        raise ModelFileError(f"cannot restore parameters ({type(e).__name__}: {e})", path=where) from e


def _shapes(tree) -> dict:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): (tuple(v.shape), np.dtype(v.dtype).str) for k, v in leaves}
