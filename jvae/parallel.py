"""The device mesh and shardings: parameters replicated, batches split over the 'data' axis.

One code path for 1 CPU, 8 fake CPU devices and many hosts: `jax.jit` partitions the step by the
shardings of its arguments.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of all processes) named 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's local batch into global arrays sharded over 'data'."""
  sharding = data_sharded(mesh)
  if jax.process_count() == 1:
    # The local batch is the global one; one device_put of the whole tree costs 0.2 ms per
    # batch against 0.33 ms for an array at a time (3 arrays, batch 64 at 16 px).
    return jax.device_put(local_batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
