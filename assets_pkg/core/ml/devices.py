"""Devices for training: a 1-D data-parallel mesh over the devices of every process (the local
ones in a single-process run), how a batch is split over it, and a description of them.

In a multi-process run (:mod:`assets_pkg.core.ml.distributed`) every process holds only its
part of each global batch: :meth:`Devices.host_rows` says which rows, and
:meth:`Devices.put_batch` assembles the parts into one global array
(``jax.make_array_from_process_local_data``).  Parameters are replicated on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@dataclass
class Devices:
    """The data-parallel layout: a 1-D mesh (axis ``data``).

    Attributes
    ----------
    mesh : jax.sharding.Mesh
        Axis ``data``.
    data : NamedSharding
        Arrays split along their first axis (the batch) over the devices.
    replicated : NamedSharding
        Arrays copied to every device (parameters, optimizer state).
    """

    mesh: Mesh
    data: NamedSharding
    replicated: NamedSharding

    @property
    def count(self) -> int:
        """Devices in the mesh, over all processes."""
        return self.mesh.devices.size

    @property
    def processes(self) -> int:
        """Processes whose devices the mesh holds (1: every device is local)."""
        return len({d.process_index for d in self.mesh.devices.flat})

    @classmethod
    def _over(cls, devices) -> Devices:
        mesh = Mesh(np.array(devices), ("data",))
        return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

    @classmethod
    def local(cls) -> Devices:
        """A mesh over this process's devices only."""
        return cls._over(jax.local_devices())

    @classmethod
    def all_processes(cls) -> Devices:
        """A mesh over the devices of every process, ordered by process (each process's rows
        of a batch are one contiguous block); the local devices in a single-process run."""
        return cls._over(sorted(jax.devices(), key=lambda d: (d.process_index, d.id)))

    def sharded(self, n: int) -> bool:
        """Whether a batch of ``n`` rows is split over the devices (``n`` divisible by
        :attr:`count`) rather than replicated."""
        return n % self.count == 0

    def host_rows(self, n: int) -> slice:
        """The rows of a global batch of ``n`` that this process supplies: its contiguous block
        when the batch is :meth:`sharded`, else all of them (replicated).

        Raises
        ------
        ValueError
            The mesh gives this process no contiguous block of rows.
        """
        if self.processes == 1 or not self.sharded(n):
            return slice(0, n)
        parts = sorted((idx[0].start or 0, idx[0].stop if idx[0].stop is not None else n)
                       for idx in self.data.addressable_devices_indices_map((n,)).values())
        if any(a[1] != b[0] for a, b in zip(parts, parts[1:], strict=False)):
            raise ValueError(f"this process's devices hold no contiguous block of a batch of {n}: {parts}")
        return slice(parts[0][0], parts[-1][1])

    def put_batch(self, *arrays: np.ndarray, size: int | None = None):
        """Place the arrays of a batch on the mesh: split along N when N is divisible by the
        device count, else replicated; returns them in the order given.

        Parameters
        ----------
        *arrays : ndarray
            Each with the batch on axis 0. With ``size``: this process's rows of the batch
            (:meth:`host_rows`); without it: the whole batch (each process keeps its rows).
        size : int, optional
            Rows of the global batch.
        """
        if self.processes == 1:
            sharding = self.data if self.sharded(arrays[0].shape[0]) else self.replicated
            return tuple(jax.device_put(a, sharding) for a in arrays)
        n = arrays[0].shape[0] if size is None else int(size)
        rows = self.host_rows(n)
        sharding = self.data if self.sharded(n) else self.replicated
        out = []
        for a in arrays:
            local = np.asarray(a)[rows] if size is None else np.asarray(a)
            if local.shape[0] != rows.stop - rows.start:
                raise ValueError(f"this process holds {local.shape[0]} rows of a batch of {n}, expected "
                                 f"{rows.stop - rows.start}")
            out.append(jax.make_array_from_process_local_data(sharding, local, (n, *local.shape[1:])))
        return tuple(out)

    def replicate(self, tree):
        """A pytree of arrays copied to every device of the mesh. In a multi-process run every
        process must pass the same values (e.g. parameters initialised from one seed)."""
        if self.processes == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree)


def describe_devices() -> str:
    """``"<count> x <platform>:<kind>"`` of the local devices, e.g. ``1 x cpu:cpu``; prefixed
    with ``"<n> processes x "`` in a multi-process run."""
    devs = jax.local_devices()
    local = f"{len(devs)} x {devs[0].platform}:{getattr(devs[0], 'device_kind', '')}"
    return f"{jax.process_count()} processes x {local}" if jax.process_count() > 1 else local
