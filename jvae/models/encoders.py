"""Encoders: images [B, H, W, C] (and an optional conditioning vector) -> features [B, F].

They stop before the latent head, so the same encoder serves VAEs (mu, logvar) and AEs (z).
Conv encoders also return their stage outputs, the seam for encoder-decoder skip connections.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.models import blocks, layers


class ConvEncoder(nn.Module):
  """Strided conv stages (each optionally followed by ResNet blocks), flatten, Dense layers.

  Attributes:
    features: output channels of each stride-`strides` conv stage.
    hidden_dims: Dense layers after flattening (and after concatenating the condition).
  """

  features: Sequence[int]
  kernel_size: int = 3
  strides: int = 2
  padding: int | str = 'SAME'
  resnet_blocks: int = 0
  hidden_dims: Sequence[int] = ()
  activation: str = 'relu'
  norm: str = 'none'
  dropout_rate: float = 0.0
  conv_impl: str = 'native'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, condition: jax.Array | None = None, train: bool = False
               ) -> tuple[jax.Array, list[jax.Array]]:
    stage_outputs = []
    h = x.astype(self.dtype)
    for features in self.features:
      # A bias before BatchNorm is cancelled by it; its gradient is rounding noise that Adam
      # would amplify into real updates.
      h = layers.Conv(features, self.kernel_size, self.strides, self.padding,
                      use_bias=self.norm == 'none', impl=self.conv_impl, dtype=self.dtype)(h)
      h = blocks.NormActDrop(self.activation, self.norm, self.dropout_rate)(h, train)
      for _ in range(self.resnet_blocks):
        h = blocks.ResNetBlock(features, self.activation, self.norm, self.conv_impl,
                               self.dtype)(h, train)
      stage_outputs.append(h)
    h = h.reshape(h.shape[0], -1)
    if condition is not None:
      h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
    for width in self.hidden_dims:
      h = blocks.ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(h))
    return h, stage_outputs


class MLPEncoder(nn.Module):
  """Flatten, then Dense + activation layers."""

  hidden_dims: Sequence[int]
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, condition: jax.Array | None = None, train: bool = False
               ) -> tuple[jax.Array, list[jax.Array]]:
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    if condition is not None:
      h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
    for width in self.hidden_dims:
      h = blocks.ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(h))
      if self.dropout_rate > 0:
        h = blocks.Dropout(self.dropout_rate, deterministic=not train)(h)
    return h, []
