"""Small building blocks shared by encoders and decoders."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.models import layers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'silu': nn.silu,
    'gelu': nn.gelu,
    'leaky_relu': nn.leaky_relu,
    'tanh': jnp.tanh,
}


class NormActDrop(nn.Module):
  """Optional BatchNorm, the activation, optional dropout: the tail of every conv stage.

  BatchNorm under `jax.jit` with a batch sharded over devices normalises over the GLOBAL batch
  (the compiler inserts the cross-device reduction), so data parallelism does not change it;
  `train.parallelism='shard_map'` makes the statistics per device (see jvae/steps.py).
  """

  activation: str
  norm: str = 'none'
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.norm == 'batch':
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=x.dtype)(x)
    x = ACTIVATIONS[self.activation](x)
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class ResNetBlock(nn.Module):
  """x + conv(act(conv(act(x)))): two 3x3 stride-1 convs with an identity shortcut."""

  features: int
  activation: str
  norm: str = 'none'
  conv_impl: str = 'native'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = NormActDrop(self.activation, self.norm)(x, train)
    h = layers.Conv(self.features, 3, 1, 'SAME', use_bias=self.norm == 'none',
                    impl=self.conv_impl, dtype=self.dtype)(h)
    h = NormActDrop(self.activation, self.norm)(h, train)
    h = layers.Conv(self.features, 3, 1, 'SAME', impl=self.conv_impl, dtype=self.dtype)(h)
    return x + h


class LabelConditioning(nn.Module):
  """Turns integer labels [B] into a conditioning vector: one-hot [B, K] or learned [B, E]."""

  kind: str
  num_classes: int
  embedding_dim: int = 8

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    if self.kind == 'onehot':
      return jax.nn.one_hot(labels, self.num_classes)
    if self.kind == 'embedding':
      return nn.Embed(self.num_classes, self.embedding_dim)(labels)
    raise ValueError(f"model.conditioning {self.kind!r}; allowed: 'onehot', 'embedding'")
