"""Decoders: latents [B, D] (and an optional conditioning vector) -> logits [B, H, W, C].

Decoders return logits, before the output activation: the Bernoulli likelihood needs them, and
the wrapper applies sigmoid/tanh for the reconstruction in the data's value range.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.models import blocks, layers


def _same_size_output_padding(kernel_size: int, strides: int, padding: int | str) -> int:
  """PyTorch-style output_padding that makes a transposed conv exactly `strides` times larger."""
  if padding == 'SAME':
    return 0
  # (H - 1) * s - 2p + k + op == s * H  =>  op = s + 2p - k
  return strides + 2 * padding - kernel_size


class ConvDecoder(nn.Module):
  """Dense layers, reshape to [h0, w0, features[0]], transposed-conv upsampling stages.

  With len(features) == number of upsampling stages + 1, every stage outputs features and a
  stride-1 output conv maps to the image channels (the Keras CVAE's layout); with
  len(features) == number of stages, the last stage outputs the image channels directly (the
  SAAAE and restoration VAEs' layout).

  Attributes:
    image_shape: (H, W, C) of the output.
    num_stages: upsampling stages, each multiplying the size by `strides`.
    skip_stages: how many stages add the matching encoder stage output before their activation.
  """

  image_shape: tuple[int, int, int]
  features: Sequence[int]
  num_stages: int
  kernel_size: int = 3
  strides: int = 2
  padding: int | str = 'SAME'
  output_kernel_size: int = 3
  resnet_blocks: int = 0
  hidden_dims: Sequence[int] = ()
  activation: str = 'relu'
  norm: str = 'none'
  dropout_rate: float = 0.0
  conv_impl: str = 'native'
  conv_transpose_impl: str = 'fast'
  skip_stages: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, condition: jax.Array | None = None, train: bool = False,
               encoder_stages: Sequence[jax.Array] = ()) -> jax.Array:
    height, width, channels = self.image_shape
    scale = self.strides**self.num_stages
    h = z.astype(self.dtype)
    if condition is not None:
      h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
    act = blocks.ACTIVATIONS[self.activation]
    for hidden in self.hidden_dims:
      h = act(nn.Dense(hidden, dtype=self.dtype)(h))
    h = act(nn.Dense((height // scale) * (width // scale) * self.features[0], dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], height // scale, width // scale, self.features[0])
    output_padding = _same_size_output_padding(self.kernel_size, self.strides, self.padding)
    has_output_conv = len(self.features) == self.num_stages + 1
    for stage in range(self.num_stages):
      is_image = not has_output_conv and stage == self.num_stages - 1
      features = channels if is_image else self.features[stage + 1]
      h = layers.ConvTranspose(features, self.kernel_size, self.strides, self.padding,
                               output_padding, use_bias=is_image or self.norm == 'none',
                               impl=self.conv_transpose_impl, dtype=self.dtype)(h)
      if is_image:
        break
      if stage < self.skip_stages:
        h = h + encoder_stages[-(stage + 2)].astype(h.dtype)
      h = blocks.NormActDrop(self.activation, self.norm, self.dropout_rate)(h, train)
      for _ in range(self.resnet_blocks):
        h = blocks.ResNetBlock(features, self.activation, self.norm, self.conv_impl,
                               self.dtype)(h, train)
    if has_output_conv:
      h = layers.Conv(channels, self.output_kernel_size, 1, 'SAME', impl=self.conv_impl,
                      dtype=self.dtype)(h)
    return h.astype(jnp.float32)


class MLPDecoder(nn.Module):
  """Dense + activation layers, then Dense to H*W*C logits."""

  image_shape: tuple[int, int, int]
  hidden_dims: Sequence[int]
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, condition: jax.Array | None = None, train: bool = False,
               encoder_stages: Sequence[jax.Array] = ()) -> jax.Array:
    del encoder_stages  # MLPs have no spatial stages to skip from.
    h = z.astype(self.dtype)
    if condition is not None:
      h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
    for hidden in self.hidden_dims:
      h = blocks.ACTIVATIONS[self.activation](nn.Dense(hidden, dtype=self.dtype)(h))
      if self.dropout_rate > 0:
        h = blocks.Dropout(self.dropout_rate, deterministic=not train)(h)
    size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    h = nn.Dense(size, dtype=self.dtype)(h)
    return h.reshape(h.shape[0], *self.image_shape).astype(jnp.float32)
