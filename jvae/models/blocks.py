"""Small building blocks shared by encoders and decoders."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.models import layers, normalization

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'silu': nn.silu,
    'gelu': nn.gelu,
    'leaky_relu': nn.leaky_relu,
    'tanh': jnp.tanh,
}


# The keep decision compares 16 random bits with round(keep_prob * 2**16): the keep probability
# is exact to 2**-17, and one 32-bit draw serves two elements.
_MASK_DTYPE = jnp.uint16


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _masked_scale(x: jax.Array, mask: jax.Array, scale: float) -> jax.Array:
  """where(mask, x * scale, 0), whose backward keeps only the boolean mask.

  Autodiff of the same `where` left XLA free to keep what the mask came from instead; after a
  ReLU that was the activation's float32 input as well as the dropout mask (lfw_improved_ae's
  step: 140 MB of XLA temporaries with autodiff, 124 with this; BENCHMARKS.md, fourteenth
  session).
  """
  return jnp.where(mask, x * jnp.asarray(scale, x.dtype), jnp.zeros_like(x))


def _masked_scale_fwd(x, mask, scale):
  return _masked_scale(x, mask, scale), mask


def _masked_scale_bwd(scale, mask, g):
  return jnp.where(mask, g * jnp.asarray(scale, g.dtype), jnp.zeros_like(g)), None


_masked_scale.defvjp(_masked_scale_fwd, _masked_scale_bwd)


class Dropout(nn.Module):
  """Inverted dropout like flax's `nn.Dropout` (its key from the same 'dropout' RNG stream, the
  same expectation, other masks), at half the PRNG work.

  flax draws a 32-bit uniform per element. On CPU JAX lowers the default PRNG, threefry2x32, to
  a rolled loop that XLA cannot fuse, so every round writes uint32 arrays of the activation's
  shape: 17 of lfw_improved_ae's 102 ms of XLA ops and tens of MB of its temporaries went to
  dropout masks. Here each 32-bit draw is split into two 16-bit ones, and kept elements are
  scaled by 2**16 / threshold, the inverse of the realised keep probability, so the expected
  output is exactly the input. (A PRNG XLA sees as plain elementwise ops, philox2x32, was faster
  alone but slower in the train step: XLA:CPU fused its rounds into the backward pass's
  consumers and recomputed them there; BENCHMARKS.md, tenth session.)

  `relu_first=True` computes dropout(relu(x)) in one masked scale, the ReLU folded into the
  mask: the same values and gradients, with one boolean per element kept for the backward pass
  instead of the ReLU's input too.
  """

  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, relu_first: bool = False) -> jax.Array:
    if self.deterministic or self.rate == 0.0:
      return nn.relu(x) if relu_first else x
    mask_bits = jnp.iinfo(_MASK_DTYPE).bits
    levels = 2 ** mask_bits
    threshold = round((1.0 - self.rate) * levels)
    if threshold <= 0:  # a rate of 1 (or within 2**-17 of it) drops everything
      return jnp.zeros_like(x)
    if threshold >= levels:  # a rate below 2**-17 keeps everything
      return nn.relu(x) if relu_first else x
    per_draw = 32 // mask_bits
    draws = jax.random.bits(self.make_rng('dropout'), (-(-x.size // per_draw),), jnp.uint32)
    bits = jax.lax.bitcast_convert_type(draws, _MASK_DTYPE).reshape(-1)[:x.size]
    keep = bits.reshape(x.shape) < threshold
    if relu_first:
      keep &= ~(x <= 0)  # rather than x > 0: a NaN stays NaN, as through nn.relu
    return _masked_scale(x, keep, levels / threshold)


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
      x = normalization.BatchNorm(momentum=0.9)(x, use_running_average=not train)
    # A ReLU before dropout goes into the dropout's mask (`Dropout`, relu_first).
    relu_first = self.dropout_rate > 0 and self.activation == 'relu'
    if not relu_first:
      x = ACTIVATIONS[self.activation](x)
    if self.dropout_rate > 0:
      x = Dropout(self.dropout_rate, deterministic=not train)(x, relu_first=relu_first)
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
