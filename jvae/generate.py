"""Generating with a trained VAE: prior samples (class-conditional or not), a decoded grid over a
2-D latent, and the posterior means of a whole split.

Every function takes either a `runs.TrainedRun` (its model and variables are used; pass
`variables=None`) or a Flax VAE built by `jvae.models.build_model` with its variables. Images come
back as float arrays in the model's output range ([0, 1] for sigmoid decoders); turn them into
uint8 with `jvae.data.pipeline.to_uint8`. Randomness comes only from the key passed in.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvae import runs
from jvae.config import base_config
from jvae.data import pipeline, sources
from jvae.trainer import MINIMAL_XLA_OPTIMIZATION


def _model_and_variables(run_or_model: runs.TrainedRun | nn.Module, variables: dict | None
                         ) -> tuple[nn.Module, dict]:
  if isinstance(run_or_model, runs.TrainedRun):
    variables = run_or_model.variables if variables is None else variables
    return run_or_model.experiment.model, variables
  if variables is None:
    raise ValueError('pass the variables of the model (or a runs.TrainedRun instead of a model)')
  return run_or_model, variables


def _check_labels(model: nn.Module, labels, num: int) -> jax.Array | None:
  if model.conditioning == 'none':
    if labels is not None:
      raise ValueError('this model is not conditioned on labels (model.conditioning=none); '
                       'pass labels=None')
    return None
  if labels is None:
    raise ValueError(f'this model is conditioned on labels (model.conditioning='
                     f'{model.conditioning!r}); pass labels [{num}] of ints in '
                     f'[0, {model.num_classes})')
  labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (num,))
  return labels


def _decode_images(module: nn.Module, z: jax.Array, labels: jax.Array | None) -> jax.Array:
  return module.activate(module.decode(z, labels))


# Generation runs once per report, not in a training loop: the fast compile matters more.
@functools.partial(jax.jit, static_argnames=('model',), compiler_options=MINIMAL_XLA_OPTIMIZATION)
def decode(model: nn.Module, variables: dict, z: jax.Array, labels: jax.Array | None = None
           ) -> jax.Array:
  """Latents z [N, D] (and labels [N] for conditioned models) -> images [N, H, W, C]."""
  return model.apply(variables, z, labels, method=_decode_images)


def _encode_mean(module: nn.Module, x: jax.Array, labels: jax.Array | None) -> jax.Array:
  return module.encode(x, labels)[0]


@functools.partial(jax.jit, static_argnames=('model', 'value_range'),
                   compiler_options=MINIMAL_XLA_OPTIMIZATION)
def _encode_batch(model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array,
                  value_range: str) -> jax.Array:
  conditioning = labels if model.conditioning != 'none' else None
  return model.apply(variables, pipeline.to_float(images, value_range), conditioning,
                     method=_encode_mean)


def sample(run_or_model: runs.TrainedRun | nn.Module, variables: dict | None, key: jax.Array,
           num: int, labels=None, temperature: float = 1.0) -> jax.Array:
  """Images decoded from prior draws z = temperature * eps, eps ~ N(0, I).

  Args:
    run_or_model: a TrainedRun, or a VAE module.
    variables: the module's variables; None with a TrainedRun.
    key: PRNG key of the draws.
    num: how many images.
    labels: for conditioned models the requested classes, [num] ints or one int for all; None
      for unconditioned models.
    temperature: scale of the prior draws; 0 decodes z = 0.

  Returns:
    images [num, H, W, C] in the model's output range.
  """
  model, variables = _model_and_variables(run_or_model, variables)
  labels = _check_labels(model, labels, num)
  z = temperature * jax.random.normal(key, (num, model.latent_dim))
  return decode(model, variables, z, labels)


def grid_latents(size: int, span: float) -> jax.Array:
  """[size * size, 2] latents on a square grid over [-span, span]^2, row-major as displayed:
  rows run from z[1] = +span (top) down to -span, columns from z[0] = -span (left) to +span."""
  values = jnp.linspace(-span, span, size)
  z1, z0 = jnp.meshgrid(values[::-1], values, indexing='ij')
  return jnp.stack([z0.ravel(), z1.ravel()], axis=-1)


def latent_grid(run_or_model: runs.TrainedRun | nn.Module, variables: dict | None,
                label: int | None = None, size: int = 15, span: float = 2.0) -> jax.Array:
  """Decodes the latent manifold of a 2-D latent: `grid_latents(size, span)` for one label.

  Returns:
    images [size * size, H, W, C], laid out as `grid_latents` says (row-major, top row z1 =
    +span): `jvae.plotting.image_grid(images, size)` draws the manifold.
  """
  model, variables = _model_and_variables(run_or_model, variables)
  if model.latent_dim != 2:
    raise ValueError(f'latent_grid decodes a 2-D latent; this model has latent_dim='
                     f'{model.latent_dim}')
  labels = _check_labels(model, label, size * size)
  return decode(model, variables, grid_latents(size, span), labels)


def encode_split(run_or_model: runs.TrainedRun | nn.Module, variables: dict | None = None,
                 split: str | None = None, source: Any = None, value_range: str | None = None,
                 batch_size: int = 500, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Posterior means of every example of a split, in order, with their labels.

  Conditioned models encode each image with its own label, q(z | x, y).

  Args:
    run_or_model: a TrainedRun (its config names the data), or a VAE module.
    variables: the module's variables; None with a TrainedRun.
    split: with a TrainedRun, the split to open (default: its eval split).
    source: an image source (`jvae.data.sources.open_source`); required with a module.
    value_range: the data's 'unit' or 'symmetric' range; with a TrainedRun, its config's.
    batch_size: images per compiled call (the last batch is padded, so one shape compiles).
    max_examples: encode only the first this many (0 = all).

  Returns:
    (mu [N, D] float32, labels [N] int32) as host arrays.
  """
  model, variables = _model_and_variables(run_or_model, variables)
  data_config: ml_collections.ConfigDict = base_config().data
  if isinstance(run_or_model, runs.TrainedRun):
    data_config = run_or_model.config.data
    value_range = value_range or data_config.value_range
    if source is None:
      source = _open_split(run_or_model, split)
  if source is None or value_range is None:
    raise ValueError('encode_split with a module needs source= and value_range=')
  count = min(len(source), max_examples) if max_examples > 0 else len(source)
  max_batches = pipeline.num_eval_batches(count, batch_size)
  means, labels = [], []
  for batch in pipeline.eval_batches(source, data_config, batch_size, max_batches):
    means.append(np.asarray(_encode_batch(model, variables, batch['image'], batch['label'],
                                          value_range)))
    labels.append(np.asarray(batch['label'], np.int32))
  return np.concatenate(means)[:count], np.concatenate(labels)[:count]


def _open_split(run: runs.TrainedRun, split: str | None):
  if split is None or split == run.config.data.eval_split:
    if run.experiment.eval_source is not None:
      return run.experiment.eval_source
    split = run.config.data.eval_split
  return sources.open_source(run.config.data, split, run.config.seed)
