"""The run's random keys: every key a run derives starts from `root_key`, under the PRNG
implementation the config names (`train.prng_impl`).

The default is JAX's, threefry2x32. On CPU JAX lowers it to a rolled loop of rounds (to keep
compile time down), which XLA cannot fuse into the consumer, so every round writes uint32 arrays
of the draw's full shape: a dropout mask for a [64, 32, 32, 32] activation took 10.4 ms and 24 MB
of temporaries alone, against 1.8 ms and none with philox2x32, lowered unrolled. In the train
step philox2x32 was slower all the same (lfw_improved_ae 147 against 104 ms): XLA:CPU fused its
rounds into the backward pass's consumers of the mask and recomputed them there (an optimization
barrier does not survive XLA:CPU's pipeline); threefry4x32 took seconds per step. So the default
stays, and `blocks.Dropout` halves the PRNG work instead (BENCHMARKS.md, tenth session). The
others are there for accelerators, where 'rbg' is the usual fast choice (its draws, unlike the
counter-based ones', may depend on the sharding).
"""

from __future__ import annotations

import jax
import ml_collections

# What runs saved before train.prng_impl existed used (JAX's default).
LEGACY_IMPL = 'threefry2x32'


def root_key(seed: int, config: ml_collections.ConfigDict) -> jax.Array:
  """A typed key for `seed` under `config.train.prng_impl`."""
  return jax.random.key(seed, impl=config.train.prng_impl)


def saved_impl(saved_config: dict | None) -> str:
  """The PRNG implementation of the run a checkpoint's saved config (a dict) comes from."""
  return ((saved_config or {}).get('train') or {}).get('prng_impl', LEGACY_IMPL)


def check_resumable(config: ml_collections.ConfigDict, saved_config: dict | None) -> None:
  """A run resumes only under the PRNG it started with, or its key stream would change."""
  impl = saved_impl(saved_config)
  if impl != config.train.prng_impl:
    raise ValueError(
        f'train.prng_impl is {config.train.prng_impl!r} but the checkpoint in this workdir was '
        f'trained with {impl!r}; resume with --config.train.prng_impl={impl} (or start a new '
        f'workdir)')
