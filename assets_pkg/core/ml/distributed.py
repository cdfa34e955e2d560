"""Multi-process (multi-controller) JAX for data-parallel training.

Every process runs the same program: :func:`initialize` joins it to the others through a
coordinator (``jax.distributed``), :class:`~assets_pkg.core.ml.devices.Devices.all_processes`
lays one mesh over the devices of all of them, and each process reads only its rows of every
global batch.  On CPU the cross-process collectives are gloo's (the default of the installed
JAX; :func:`initialize` sets it explicitly).

Only process 0 writes files (checkpoints, the model folder); what the others need from those
files when a run resumes reaches them through :func:`broadcast_json` and
:func:`broadcast_tree`.  Decisions taken on one process's clock (a time budget) go through
:func:`agree`, so that every process runs the same steps.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np

from ..errors import CellscapeError

_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def initialize(coordinator: str, num_processes: int, process_id: int, *,
               local_device_ids: list[int] | None = None, timeout_s: int = 300) -> None:
    """Join this process to a multi-process JAX run; call it before any JAX computation.

    Parameters
    ----------
    coordinator : str
        ``host:port`` of the coordinator (process 0 listens there; every process gives the
        same address).
    num_processes : int
        Processes in the run; 1 starts nothing (a single-process run).
    process_id : int
        This process, ``0 <= process_id < num_processes``; process 0 writes the files.
    local_device_ids : list of int, optional
        Accelerators this process uses (one process per GPU); default all it sees.
    timeout_s : int
        Seconds to wait for every process to join.

    Raises
    ------
    CellscapeError
        A malformed address, count or id (``field`` names the argument).
    """
    if num_processes < 1:
        raise CellscapeError(f"num_processes must be >= 1, got {num_processes}", field="num_processes")
    if not 0 <= process_id < num_processes:
        raise CellscapeError(f"process_id must be in [0, {num_processes}), got {process_id}", field="process_id")
    if not _ADDRESS.match(coordinator or ""):
        raise CellscapeError(f"coordinator must be host:port, got {coordinator!r}", field="coordinator")
    if num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_s)


def is_primary() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


def multi_process() -> bool:
    """Whether this run has more than one process."""
    return jax.process_count() > 1


def broadcast_tree(tree):
    """Process 0's pytree of arrays on every process, as host (NumPy) arrays of the dtypes given.

    Every process passes a tree of the same structure, shapes and dtypes (the others' values
    are ignored).  A collective: every process must call it.
    """
    if not multi_process():
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    dtypes = jax.tree_util.tree_map(lambda x: np.asarray(x).dtype, tree)
    got = multihost_utils.broadcast_one_to_all(jax.tree_util.tree_map(np.asarray, tree))
    return jax.tree_util.tree_map(lambda x, d: np.asarray(x).astype(d), got, dtypes)


def broadcast_json(obj):
    """Process 0's JSON-able ``obj`` on every process (the others' ``obj`` is ignored). A collective."""
    if not multi_process():
        return obj
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_primary() else np.zeros(0, np.uint8)
    n = int(broadcast_tree(np.int32(data.size)))
    buf = broadcast_tree(np.pad(data, (0, n - data.size)).astype(np.int32))  # int32: exact through the psum
    return json.loads(bytes(buf.astype(np.uint8)).decode())


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process. A collective."""
    return bool(broadcast_tree(np.int32(bool(flag)))) if multi_process() else bool(flag)


def place_like(template, host):
    """The host pytree ``host`` as device arrays with the shardings and dtypes of ``template``
    (a pytree of jax.Array, global or local)."""
    def put(t, h):
        h = np.asarray(h, dtype=t.dtype)
        return jax.make_array_from_callback(t.shape, t.sharding, lambda idx: h[idx])

    return jax.tree_util.tree_map(put, template, host)
