"""Latent-space figures every VAE run gets from `jvae.evaluate`: interpolations between held-out
images (linear and spherical), traversals of the most informative latent dimensions, and prior
samples at several temperatures.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jvae import plotting
from jvae.data import pipeline


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between latents a, b [D] at fractions t [T] -> [T, D].

  Follows the great circle between the two directions while interpolating the norm linearly, so
  intermediate codes keep the typical norm of Gaussian samples instead of shrinking toward 0 as
  a straight line through the origin region does (White, 2016). Falls back to linear when a and
  b are (anti)parallel.
  """
  t = jnp.asarray(t, jnp.float32)[:, None]
  norm_a, norm_b = jnp.linalg.norm(a), jnp.linalg.norm(b)
  unit_a, unit_b = a / jnp.maximum(norm_a, 1e-12), b / jnp.maximum(norm_b, 1e-12)
  omega = jnp.arccos(jnp.clip(jnp.dot(unit_a, unit_b), -1.0, 1.0))
  sin_omega = jnp.sin(omega)
  direction = jnp.where(
      sin_omega > 1e-6,
      (jnp.sin((1 - t) * omega) * unit_a + jnp.sin(t * omega) * unit_b) / sin_omega,
      (1 - t) * unit_a + t * unit_b)
  return direction * ((1 - t) * norm_a + t * norm_b)


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Linear interpolation a -> b at fractions t [T] -> [T, D]."""
  t = jnp.asarray(t, jnp.float32)[:, None]
  return (1 - t) * a + t * b


def most_informative_dimensions(kl_per_dim, count: int) -> np.ndarray:
  """Indices of the `count` latent dimensions with the largest held-out KL, largest first."""
  return np.argsort(-np.asarray(kl_per_dim))[:count]


def traversal_latents(base: jax.Array, dimensions, values) -> jax.Array:
  """[len(dimensions) * len(values), D]: `base` with one dimension set to each value in turn."""
  rows = []
  for dim in dimensions:
    for value in values:
      rows.append(base.at[int(dim)].set(value))
  return jnp.stack(rows)


def write_latent_figures(run, key: jax.Array, out_dir: str, kl_per_dim=None,
                         steps: int = 8, traversal_dims: int = 6,
                         temperatures=(0.5, 0.8, 1.0)) -> list[str]:
  """Interpolation, traversal and temperature figures for a VAE run; returns the PNG paths.

  Args:
    run: a `jvae.runs.TrainedRun` of a VAE.
    key: PRNG key for the prior samples.
    out_dir: directory for the PNGs.
    kl_per_dim: held-out KL of each latent dimension (from the eval metrics) to choose the
      traversed dimensions; None traverses the first ones.
  """
  config, experiment = run.config, run.experiment
  if config.model.kind != 'vae':
    return []
  apply, variables = experiment.apply_fn, run.variables
  value_range = config.data.value_range
  latent_dim = config.model.latent_dim
  conditioned = config.model.conditioning != 'none'
  examples = experiment.eval_source
  a, b = examples[0], examples[min(1, len(examples) - 1)]
  images = pipeline.to_float(jnp.stack([a['image'], b['image']]), value_range)
  labels = jnp.asarray([a['label'], b['label']], jnp.int32) if conditioned else None
  mu, _, _ = apply(variables, images, labels, method='encode')

  def decode(z, label=None):
    z_labels = jnp.full((z.shape[0],), label, jnp.int32) if conditioned else None
    logits = apply(variables, z, z_labels, method='decode')
    return pipeline.to_uint8(apply(variables, logits, method='activate'), value_range)

  label_a = int(a['label']) if conditioned else None
  t = jnp.linspace(0.0, 1.0, steps)
  paths = [plotting.save_rows(
      os.path.join(out_dir, 'interpolation.png'),
      [decode(lerp(mu[0], mu[1], t), label_a), decode(slerp(mu[0], mu[1], t), label_a)],
      ['linear interpolation between two held-out images', 'spherical interpolation'])]
  dims = (most_informative_dimensions(kl_per_dim, traversal_dims) if kl_per_dim is not None
          else np.arange(min(traversal_dims, latent_dim)))
  values = jnp.linspace(-3.0, 3.0, steps)
  grid = decode(traversal_latents(mu[0], dims, values), label_a)
  paths.append(plotting.save_rows(
      os.path.join(out_dir, 'traversals.png'),
      [grid[i * steps:(i + 1) * steps] for i in range(len(dims))],
      [f'dimension {int(d)} from -3 to 3 (others: a held-out image\'s mean)' for d in dims]))
  rows, titles = [], []
  for index, temperature in enumerate(temperatures):
    z = temperature * jax.random.normal(jax.random.fold_in(key, index), (steps, latent_dim))
    rows.append(decode(z, label_a))
    titles.append(f'prior samples at temperature {temperature}')
  paths.append(plotting.save_rows(os.path.join(out_dir, 'temperatures.png'), rows, titles))
  return paths
