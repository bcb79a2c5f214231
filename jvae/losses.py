"""Reconstruction likelihoods and the VAE/AE objective.

The one reduction used everywhere: every per-image term is a SUM over pixels and channels (and,
for KL, over latent dimensions), and a batch loss is the MEAN of per-image terms over the batch.
So `loss`, `reconstruction` and `kl` are all in nats (or squared/absolute error units) per image.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jvae import distributions

RECONSTRUCTION_LOSSES = ('bernoulli', 'mse', 'l1', 'gaussian')


def _sum_per_image(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def reconstruction_nll(kind: str, logits: jax.Array, reconstruction: jax.Array,
                       target: jax.Array, gaussian_sigma: float = 1.0) -> jax.Array:
  """Per-image reconstruction term, summed over pixels: [B, H, W, C] -> [B].

  Args:
    kind: bernoulli (binary cross-entropy from `logits`, targets in [0, 1]); mse (sum of squared
      errors); l1 (sum of absolute errors); gaussian (negative log-likelihood under
      N(reconstruction, gaussian_sigma^2), constants included, so it is a proper NLL in nats).
    logits: decoder output before its output activation.
    reconstruction: decoder output after the output activation, in the data's value range.
    target: the clean images, same shape.
  """
  logits = logits.astype(jnp.float32)
  reconstruction = reconstruction.astype(jnp.float32)
  if kind == 'bernoulli':
    return _sum_per_image(optax.sigmoid_binary_cross_entropy(logits, target))
  if kind == 'mse':
    return _sum_per_image(jnp.square(reconstruction - target))
  if kind == 'l1':
    return _sum_per_image(jnp.abs(reconstruction - target))
  if kind == 'gaussian':
    var = gaussian_sigma**2
    per_pixel = 0.5 * jnp.square(reconstruction - target) / var + 0.5 * jnp.log(2 * jnp.pi * var)
    return _sum_per_image(per_pixel)
  raise ValueError(f'loss.reconstruction {kind!r}; allowed: {", ".join(RECONSTRUCTION_LOSSES)}')


def per_example_terms(outputs: dict[str, jax.Array], target: jax.Array,
                      loss_config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Per-image terms [B] (and the KL per dimension [B, D]) from a model's outputs.

  `outputs` holds logits and reconstruction, plus mu and logvar for VAEs, and optionally
  `kl_weights` [B, D] that weights the KL of each dimension (SAAAE's KL decoupled from anchors).
  """
  terms = {'reconstruction': reconstruction_nll(
      loss_config.reconstruction, outputs['logits'], outputs['reconstruction'], target,
      loss_config.gaussian_sigma)}
  if 'mu' in outputs:
    kl_per_dim = distributions.gaussian_kl_per_dim(
        outputs['mu'].astype(jnp.float32), outputs['logvar'].astype(jnp.float32))
    if 'kl_weights' in outputs:
      kl_per_dim = kl_per_dim * outputs['kl_weights']
    terms['kl_per_dim'] = kl_per_dim
    terms['kl'] = jnp.sum(kl_per_dim, axis=-1)
  return terms


def objective(outputs: dict[str, jax.Array], target: jax.Array, beta: jax.Array,
              loss_config: ml_collections.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training loss (batch mean of per-image terms) and its logged parts.

  Logs the raw KL in nats and beta * KL separately. With free bits lambda, each dimension's
  batch-mean KL enters the loss as max(KL_d, lambda) (Kingma et al., 2016); the logged `kl` stays
  the raw value.
  """
  terms = per_example_terms(outputs, target, loss_config)
  reconstruction = jnp.mean(terms['reconstruction'])
  metrics = {'reconstruction': reconstruction}
  loss = reconstruction
  if 'kl' in terms:
    kl_per_dim = jnp.mean(terms['kl_per_dim'], axis=0)
    kl = jnp.sum(kl_per_dim)
    kl_in_loss = kl
    if loss_config.free_bits > 0:
      kl_in_loss = jnp.sum(jnp.maximum(kl_per_dim, loss_config.free_bits))
    loss = reconstruction + beta * kl_in_loss
    metrics.update(kl=kl, beta=beta, beta_kl=beta * kl, elbo=-(reconstruction + kl))
  metrics['loss'] = loss
  return loss, metrics


BetaFn = Callable[[jax.Array], jax.Array]
