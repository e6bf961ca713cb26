"""Devices, processes and sharded batches: one code path from one CPU to many hosts.

Training is data-parallel over a 1-D mesh whose axis ``"data"`` spans every device of every
process. Parameters and optimizer state are replicated; a batch is split along its leading
axis, and each process loads only the rows its own devices hold (`local_rows`).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Joins the processes of a multi-host run: ``jax.distributed.initialize`` from the
    environment — SLURM (``srun``), Cloud TPU VMs, or explicit ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. Must run before anything touches a device."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()  # detects SLURM and TPU pods


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_rows(mesh: Mesh, global_size: int) -> slice:
    """The rows of a ``global_size`` batch held by this process's devices (contiguous)."""
    if global_size % mesh.size:
        raise ValueError(f"a batch of {global_size} does not split over {mesh.size} devices")
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    rows = sorted(
        (index[0].start or 0, index[0].stop or global_size) for index in index_map.values()
    )
    if any(stop != start for (_, stop), (start, _) in zip(rows, rows[1:])):
        raise ValueError(f"this process's devices hold non-contiguous rows {rows}")
    return slice(rows[0][0], rows[-1][1])


def spread(rows: np.ndarray, num_shards: int) -> np.ndarray:
    """The rows re-laid out round-robin over ``num_shards`` equal shards: row ``j`` moves to shard
    ``j % num_shards``. A Poisson batch (real examples first, then padding) thus gives every
    device a near-equal share of real examples, with its padding last (its all-padding
    micro-batches are skipped)."""
    size = len(rows)
    if size % num_shards:
        raise ValueError(f"a batch of {size} does not split into {num_shards} shards")
    by_shard = rows.reshape(size // num_shards, num_shards, *rows.shape[1:]).swapaxes(0, 1)
    return by_shard.reshape(rows.shape)


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, global_size: int) -> dict[str, jax.Array]:
    """This process's rows of a batch → global arrays sharded over the mesh's data axis."""
    sharding = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, rows, (global_size, *rows.shape[1:]))
        for name, rows in batch.items()
    }
