"""Devices for training: a 1-D data-parallel mesh over the local devices and a description of them."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@dataclass
class Devices:
    """The data-parallel layout: a 1-D mesh over the local devices.

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
        return self.mesh.devices.size

    @classmethod
    def local(cls) -> Devices:
        mesh = Mesh(np.array(jax.local_devices()), ("data",))
        return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

    def put_batch(self, *arrays: np.ndarray):
        """Shard arrays of a batch over the devices along N (N divisible by the device count),
        else replicate them; returns them in the order given."""
        sharding = self.data if arrays[0].shape[0] % self.count == 0 else self.replicated
        return tuple(jax.device_put(a, sharding) for a in arrays)


def describe_devices() -> str:
    """``"<count> x <platform>:<kind>"`` of the local devices, e.g. ``1 x cpu:cpu``."""
    devs = jax.local_devices()
    return f"{len(devs)} x {devs[0].platform}:{getattr(devs[0], 'device_kind', '')}"
