"""Device mesh from config and the shardings that batches and state use."""
from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def num_data_devices(config: Any) -> int:
    """Resolve ``config.mesh.data`` (-1 = all devices) and check it fits the machine."""
    available = jax.device_count()
    n = int(config.mesh.data)
    if n == -1:
        return available
    if n < 1 or n > available:
        raise ValueError(f"mesh.data={n} but {available} device(s) are available; use 1..{available} or -1")
    return n


def make_mesh(config: Any) -> Mesh:
    """A 1-D mesh with the ``data`` axis over the first ``mesh.data`` devices.

    Auto axis types: shardings come from jit in/out shardings and constraints, and XLA
    propagates them through gathers and Brax's scatters (Explicit axes would demand an
    out_sharding on every such op).
    """
    n = num_data_devices(config)
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def check_divisible(name: str, value: int, mesh: Mesh) -> None:
    """Fail naming ``name`` when a global batch does not split evenly over the data axis."""
    n = mesh.shape[DATA_AXIS]
    if value % n:
        raise ValueError(f"{name}={value} does not divide over the {n} devices of the mesh 'data' axis")


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ``data``; the rest replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def shard_leading(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` with its leading dimension split over ``data``."""
    return jax.device_put(tree, data_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))
