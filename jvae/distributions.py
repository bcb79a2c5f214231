"""Diagonal-Gaussian posterior math: closed-form KL and the (noise-masked) reparameterization."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_kl_per_dim(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, in nats.

  Args:
    mu: [..., D] posterior means.
    logvar: [..., D] posterior log-variances.

  Returns:
    [..., D] non-negative KL of each dimension.
  """
  return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL summed over the latent dimensions: [..., D] -> [...], in nats."""
  return jnp.sum(gaussian_kl_per_dim(mu, logvar), axis=-1)


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array,
                   noise_mask: jax.Array | None = None) -> jax.Array:
  """Draws z = mu + sigma * eps * m with eps ~ N(0, I).

  Args:
    key: the PRNG key for eps, split for this draw only.
    mu, logvar: [B, D].
    noise_mask: optional m in [0, 1], broadcastable to [B, D]. m = 0 returns mu; m = 1 is the
      usual sample. SAAAE's anchor passes m = 1 - a_norm (high attention, less noise).

  Returns:
    [B, D] latent samples, differentiable in mu, logvar (and m).
  """
  eps = jax.random.normal(key, mu.shape, mu.dtype)
  if noise_mask is not None:
    eps = eps * noise_mask
  return mu + jnp.exp(0.5 * logvar) * eps


def gaussian_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mu, exp(logvar)) summed over the last axis: [..., D] -> [...]."""
  return -0.5 * jnp.sum(
      jnp.log(2 * jnp.pi) + logvar + jnp.square(z - mu) * jnp.exp(-logvar), axis=-1)
