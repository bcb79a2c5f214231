"""Likelihood bounds: the importance-weighted bound (IWAE) and bits per dimension.

log p(x) >= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q(z | x)   (Burda et al., 2016).
K = 1 is the ELBO; the bound tightens as K grows. Samples are drawn and decoded in chunks, with a
running log-sum-exp, so memory stays bounded for any K.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jvae import distributions, losses

DENSITY_LIKELIHOODS = ('bernoulli', 'gaussian')


def log_importance_weights(model: nn.Module, variables: dict, mu: jax.Array, logvar: jax.Array,
                           target: jax.Array, labels: jax.Array | None, key: jax.Array,
                           num_samples: int, loss_config: ml_collections.ConfigDict
                           ) -> jax.Array:
  """log p(x|z_k) + log p(z_k) - log q(z_k|x) for `num_samples` draws: [K, B]."""
  batch = mu.shape[0]
  eps = jax.random.normal(key, (num_samples, *mu.shape), mu.dtype)
  z = mu + jnp.exp(0.5 * logvar) * eps  # [K, B, D]
  flat_z = z.reshape(num_samples * batch, -1)
  flat_labels = None if labels is None else jnp.tile(labels, num_samples)
  logits = model.apply(variables, flat_z, flat_labels, method='decode')
  reconstruction = model.apply(variables, logits, method='activate')
  flat_target = jnp.tile(target, (num_samples,) + (1,) * (target.ndim - 1))
  log_px = -losses.reconstruction_nll(loss_config.reconstruction, logits, reconstruction,
                                      flat_target, loss_config.gaussian_sigma)
  log_px = log_px.reshape(num_samples, batch)
  log_pz = distributions.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
  log_qz = distributions.gaussian_log_density(z, mu, logvar)
  return log_px + log_pz - log_qz


def iwae_log_likelihood(model: nn.Module, variables: dict, inputs: jax.Array,
                        target: jax.Array, labels: jax.Array | None, key: jax.Array,
                        num_samples: int, chunk_size: int,
                        loss_config: ml_collections.ConfigDict) -> jax.Array:
  """The IWAE estimate of log p(target | inputs) per image [B], in nats, K = `num_samples`.

  Draws `chunk_size` samples at a time (K must be a multiple of it); chunk c uses
  fold_in(key, c), so a larger K with the same key reuses the smaller K's samples.
  """
  if loss_config.reconstruction not in DENSITY_LIKELIHOODS:
    raise ValueError(f'the IWAE bound needs a density; loss.reconstruction is '
                     f'{loss_config.reconstruction!r}, allowed: {", ".join(DENSITY_LIKELIHOODS)}')
  if num_samples % chunk_size:
    raise ValueError(f'num_samples {num_samples} must be a multiple of chunk_size {chunk_size}')
  mu, logvar, _ = model.apply(variables, inputs, labels, method='encode')

  def body(running, chunk):
    log_w = log_importance_weights(model, variables, mu, logvar, target, labels,
                                   jax.random.fold_in(key, chunk), chunk_size, loss_config)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

  start = jnp.full(mu.shape[:1], -jnp.inf, jnp.float32)
  total, _ = jax.lax.scan(body, start, jnp.arange(num_samples // chunk_size))
  return total - math.log(num_samples)


def bits_per_dim(nll_nats: float, num_dims: int, reconstruction: str,
                 value_range: tuple[float, float]) -> float:
  """Negative log-likelihood per image in nats -> bits per dimension.

  Bernoulli: of binary data, nll / (D ln 2). Gaussian: a density over the continuous value range;
  the 8-bit data it models have bins of width (high - low) / 256, so
  bits/dim = nll / (D ln 2) + log2(256 / (high - low)) (uniform dequantization).
  """
  bits = nll_nats / (num_dims * math.log(2))
  if reconstruction == 'gaussian':
    low, high = value_range
    bits += math.log2(256 / (high - low))
  return bits

