"""Starting JAX's multi-process runtime from config (or the cluster's environment)."""

from __future__ import annotations

import jax
import ml_collections
from absl import logging


def initialize(config: ml_collections.ConfigDict) -> None:
  """Calls `jax.distributed.initialize` when `distributed.enabled`; a no-op otherwise.

  Must run before any other JAX call. Each process then sees every device of the job in
  `jax.devices()`, reads its own rows of each global batch, and only process 0 writes logs and
  figures; Orbax saves and restores the global arrays.
  """
  settings = config.distributed
  if not settings.enabled:
    return
  # On CPU, cross-process collectives need an explicit implementation.
  jax.config.update('jax_cpu_collectives_implementation', settings.cpu_collectives)
  kwargs = {}
  if settings.coordinator_address:
    kwargs['coordinator_address'] = settings.coordinator_address
  if settings.num_processes > 0:
    kwargs['num_processes'] = settings.num_processes
  if settings.process_id >= 0:
    kwargs['process_id'] = settings.process_id
  jax.distributed.initialize(**kwargs)
  logging.info('process %d of %d; %d local and %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
