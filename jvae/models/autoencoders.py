"""The two wrappers every system is built from: a VAE and a deterministic autoencoder.

Both take an encoder (-> features) and a decoder (-> logits) and add the latent head, label
conditioning and the output activation. The VAE's `anchor` is the seam for a module that turns
the input into a noise mask m in [0, 1] for the reparameterization (SAAAE).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae import distributions
from jvae.models import blocks

OUTPUT_ACTIVATIONS = {'sigmoid': nn.sigmoid, 'tanh': jnp.tanh, 'none': lambda x: x}


class _Conditioned(nn.Module):
  """Shared plumbing: the label vector and the output activation."""

  def condition(self, labels: jax.Array | None) -> jax.Array | None:
    if self.conditioning == 'none':
      return None
    if labels is None:
      raise ValueError('this model is conditioned on labels (model.conditioning='
                       f'{self.conditioning!r}); pass labels [B] of ints in '
                       f'[0, {self.num_classes})')
    return self.label_conditioning(labels)

  def activate(self, logits: jax.Array) -> jax.Array:
    return OUTPUT_ACTIVATIONS[self.output_activation](logits)


class VAE(_Conditioned):
  """Gaussian-posterior VAE. Draws use the 'latent' PRNG stream passed to `apply`.

  Outputs of `__call__`: logits and reconstruction [B, H, W, C], mu, logvar and z [B, D], and,
  with an anchor, noise_mask [B, D] (and kl_weights [B, D] when the anchor weights the KL).
  """

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  output_activation: str = 'sigmoid'
  conditioning: str = 'none'
  num_classes: int = 10
  label_embedding_dim: int = 8
  anchor: nn.Module | None = None

  def setup(self):
    self.mu_head = nn.Dense(self.latent_dim, name='mu')
    self.logvar_head = nn.Dense(self.latent_dim, name='logvar')
    if self.conditioning != 'none':
      self.label_conditioning = blocks.LabelConditioning(
          self.conditioning, self.num_classes, self.label_embedding_dim)

  def encode(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False):
    """[B, H, W, C] -> (mu [B, D], logvar [B, D], encoder stage outputs)."""
    features, stages = self.encoder(x, self.condition(labels), train)
    mu = self.mu_head(features).astype(jnp.float32)
    logvar = self.logvar_head(features).astype(jnp.float32)
    return mu, logvar, stages

  def decode(self, z: jax.Array, labels: jax.Array | None = None, train: bool = False,
             encoder_stages=()) -> jax.Array:
    """[B, D] -> logits [B, H, W, C] (apply `activate` for images)."""
    return self.decoder(z, self.condition(labels), train, encoder_stages)

  def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False,
               sample: bool = True) -> dict[str, jax.Array]:
    mu, logvar, stages = self.encode(x, labels, train)
    outputs = {'mu': mu, 'logvar': logvar}
    noise_mask = None
    if self.anchor is not None:
      outputs.update(self.anchor(x, train))
      noise_mask = outputs.get('noise_mask')
    if sample:
      z = distributions.reparameterize(self.make_rng('latent'), mu, logvar, noise_mask)
    else:
      z = mu
    logits = self.decode(z, labels, train, stages)
    outputs.update(z=z, logits=logits, reconstruction=self.activate(logits))
    return outputs


class Autoencoder(_Conditioned):
  """Deterministic autoencoder: encoder, Dense to the code z, decoder."""

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  output_activation: str = 'sigmoid'
  conditioning: str = 'none'
  num_classes: int = 10
  label_embedding_dim: int = 8

  def setup(self):
    self.code_head = nn.Dense(self.latent_dim, name='code')
    if self.conditioning != 'none':
      self.label_conditioning = blocks.LabelConditioning(
          self.conditioning, self.num_classes, self.label_embedding_dim)

  def encode(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False):
    """[B, H, W, C] -> (z [B, D], None, encoder stage outputs)."""
    features, stages = self.encoder(x, self.condition(labels), train)
    return self.code_head(features).astype(jnp.float32), None, stages

  def decode(self, z: jax.Array, labels: jax.Array | None = None, train: bool = False,
             encoder_stages=()) -> jax.Array:
    return self.decoder(z, self.condition(labels), train, encoder_stages)

  def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False,
               sample: bool = True) -> dict[str, jax.Array]:
    del sample  # Deterministic.
    z, _, stages = self.encode(x, labels, train)
    logits = self.decode(z, labels, train, stages)
    return {'z': z, 'logits': logits, 'reconstruction': self.activate(logits)}
