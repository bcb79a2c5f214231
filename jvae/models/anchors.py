"""SAAAE's anchor branch (SPEC S1): self-attention over the input -> a noise mask for the VAE.

An anchor reads the model input x [B, H, W, C] and returns a vector a [B, D] (D = latent size)
after a Dense layer and SiLU. Min-max normalised to a_norm in [0, 1], it scales the noise of the
reparameterization, z = mu + std * eps * (1 - a_norm): dimensions the anchor attends to get less
noise. Two anchors are registered in `jvae.models.ANCHORS` (and with config validation):

- 'channel_attention', the source's: the image is read as C tokens (one per colour channel) of
  H*W features, and one head of self-attention runs over those tokens. At 64x64 its query, key,
  value and output projections are 4 * 4096^2 weights (~67M), and the Dense from the flattened
  3 * 4096 output to the latent adds ~1.6M.
- 'patch_attention', a cheap stand-in: non-overlapping p x p patches are the tokens, embedded to
  `model.anchor_embed_dim` features with a learned position embedding, then the same one-head
  self-attention, flatten, Dense and SiLU (~0.56M parameters at 64x64 with 8x8 patches).

- 'constant_noise', the ablation of the comparison: no attention and no parameters, every
  dimension's noise scaled by the constant `model.anchor_noise_scale`. Set to the mean noise mask
  of a trained SAAAE, it separates the anchor's effect from simply injecting less noise.

The attention anchors return {'noise_mask': 1 - a_norm, 'anchor': a_norm} and, with
`model.anchor_kl_weighting='noise_mask'`, 'kl_weights' = the noise mask, which `jvae.losses`
multiplies into the KL of each dimension.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jvae import config as config_lib
from jvae.config import ConfigError
from jvae.models import ANCHORS

NORMALIZATIONS = ('per_example', 'batch')
KL_WEIGHTINGS = ('full', 'noise_mask')
# The smallest max - min the normalisation divides by. Below it the anchor is flat and a_norm is
# 0 (full noise everywhere, a plain VAE draw) instead of 0/0.
SAFE_RANGE = 1e-6


def min_max_normalize(a: jax.Array, normalization: str = 'per_example',
                      safe_range: float = SAFE_RANGE) -> jax.Array:
  """Scales an anchor vector to [0, 1] by its minimum and maximum.

  Args:
    a: [B, D] anchor activations.
    normalization: 'per_example' takes min and max over each row's D values, so one image's
      mask does not depend on the rest of the batch; 'batch' takes them over the whole [B, D]
      array, as the source did (under a sharded `jax.jit` that is the global batch, and at eval
      time the padding rows of the last batch take part).
    safe_range: the denominator is max(max - min, safe_range), so a constant `a` gives 0, not NaN.

  Returns:
    [B, D] float32 in [0, 1].
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f'anchor normalization {normalization!r}; allowed: '
                     f'{", ".join(NORMALIZATIONS)}')
  a = a.astype(jnp.float32)
  axis = -1 if normalization == 'per_example' else None
  low = jnp.min(a, axis=axis, keepdims=True)
  high = jnp.max(a, axis=axis, keepdims=True)
  return (a - low) / jnp.maximum(high - low, safe_range)


def anchor_outputs(a: jax.Array, normalization: str, kl_weighting: str) -> dict[str, jax.Array]:
  """The dict the VAE merges into its outputs, from anchor activations a [B, D]."""
  a_norm = min_max_normalize(a, normalization)
  noise_mask = 1.0 - a_norm
  outputs = {'anchor': a_norm, 'noise_mask': noise_mask}
  if kl_weighting == 'noise_mask':
    # The weights are constants to the KL: with a gradient, the KL alone would push the anchor to
    # flag dimensions as important to escape their KL, whatever they do for reconstruction.
    outputs['kl_weights'] = jax.lax.stop_gradient(noise_mask)
  elif kl_weighting != 'full':
    raise ValueError(f'anchor kl_weighting {kl_weighting!r}; allowed: {", ".join(KL_WEIGHTINGS)}')
  return outputs


class OneHeadSelfAttention(nn.Module):
  """One head of scaled dot-product self-attention, [B, N, F] -> [B, N, F].

  The function of flax's `MultiHeadDotProductAttention(num_heads=1)` (the same initializers,
  biases and 1/sqrt(d) scaling), written with `nn.Dense` projections. With one head flax's
  DenseGeneral kernels carry a head axis of size 1 ([F, 1, d]), and on XLA:CPU the weight
  gradients then come out transposed: at the channel anchor's F = d = 4096 every optimizer
  fusion re-did a 4096 x 4096 transpose, about half of the SAAAE train step. Plain [F, d]
  kernels get their gradients in place.

  Attributes:
    attention_dim: query/key/value width d; 0 keeps the token width F.
    dtype: computation dtype; parameters stay float32.
  """

  attention_dim: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    width = tokens.shape[-1]
    d = self.attention_dim or width

    def project(x, features, name):
      # On rows [B*N, F]: from [B, N, F] the kernel gradient contracts two axes, and XLA:CPU
      # then transposes the output gradient to feature-major first (as in
      # `layers.matmul_rows`).
      rows = nn.Dense(features, dtype=self.dtype, name=name)(x.reshape(-1, x.shape[-1]))
      return rows.reshape(*x.shape[:-1], features)

    query, key, value = (project(tokens, d, name) for name in ('query', 'key', 'value'))
    logits = jnp.einsum('bnd,bmd->bnm', query / jnp.sqrt(d).astype(query.dtype), key)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    return project(jnp.einsum('bnm,bmd->bnd', weights, value), width, 'out')


def _self_attention(tokens: jax.Array, attention_dim: int, dtype: jnp.dtype) -> jax.Array:
  """One head of self-attention, [B, N, F] -> [B, N, F], query/key/value width `attention_dim`."""
  return OneHeadSelfAttention(attention_dim, dtype, name='attention')(tokens)


class ChannelAttentionAnchor(nn.Module):
  """The source's anchor: self-attention over the C channel tokens of H*W features each.

  Attributes:
    latent_dim: D, the size of the noise mask.
    attention_dim: query/key/value width; 0 keeps the token width H*W (the source).
    normalization: 'per_example' or 'batch' (see `min_max_normalize`).
    kl_weighting: 'full' (no KL weights) or 'noise_mask'.
  """

  latent_dim: int
  attention_dim: int = 0
  normalization: str = 'per_example'
  kl_weighting: str = 'full'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """x [B, H, W, C] -> {'noise_mask', 'anchor'} [B, D] in [0, 1] (and 'kl_weights')."""
    del train  # No dropout or normalisation statistics.
    b, h, w, c = x.shape
    # PyTorch's x.view(B, C, H * W) of an NCHW image: each token is one channel, row-major.
    tokens = jnp.transpose(x.astype(self.dtype), (0, 3, 1, 2)).reshape(b, c, h * w)
    attended = _self_attention(tokens, self.attention_dim, self.dtype)
    a = nn.silu(nn.Dense(self.latent_dim, dtype=self.dtype, name='to_latent')(
        attended.reshape(b, c * h * w)))
    return anchor_outputs(a, self.normalization, self.kl_weighting)


class PatchAttentionAnchor(nn.Module):
  """A cheap anchor: self-attention over (H/p)*(W/p) patch tokens of `embed_dim` features.

  Attributes:
    latent_dim: D, the size of the noise mask.
    patch_size: p; H and W must divide by it.
    embed_dim: token width after the linear patch embedding.
    attention_dim: query/key/value width; 0 keeps `embed_dim`.
    normalization: 'per_example' or 'batch' (see `min_max_normalize`).
    kl_weighting: 'full' (no KL weights) or 'noise_mask'.
  """

  latent_dim: int
  patch_size: int = 8
  embed_dim: int = 64
  attention_dim: int = 0
  normalization: str = 'per_example'
  kl_weighting: str = 'full'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """x [B, H, W, C] -> {'noise_mask', 'anchor'} [B, D] in [0, 1] (and 'kl_weights')."""
    del train
    b, h, w, c = x.shape
    p = self.patch_size
    patches = x.astype(self.dtype).reshape(b, h // p, p, w // p, p, c)
    patches = jnp.transpose(patches, (0, 1, 3, 2, 4, 5)).reshape(b, (h // p) * (w // p), p * p * c)
    tokens = nn.Dense(self.embed_dim, dtype=self.dtype, name='embed')(patches)
    # Attention is blind to token order; the position embedding tells it where a patch is.
    position = self.param('position', nn.initializers.normal(0.02), tokens.shape[1:], jnp.float32)
    tokens = tokens + position.astype(self.dtype)
    attended = _self_attention(tokens, self.attention_dim, self.dtype)
    a = nn.silu(nn.Dense(self.latent_dim, dtype=self.dtype, name='to_latent')(
        attended.reshape(b, -1)))
    return anchor_outputs(a, self.normalization, self.kl_weighting)


class ConstantNoiseAnchor(nn.Module):
  """noise_mask = `noise_scale` for every example and dimension: z = mu + std * eps * scale."""

  latent_dim: int
  noise_scale: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train
    return {'noise_mask': jnp.full((x.shape[0], self.latent_dim), self.noise_scale, jnp.float32)}


def _common(model_config: ml_collections.ConfigDict) -> dict:
  return dict(latent_dim=model_config.latent_dim, attention_dim=model_config.anchor_attention_dim,
              normalization=model_config.anchor_normalization,
              kl_weighting=model_config.anchor_kl_weighting, dtype=jnp.dtype(model_config.dtype))


def channel_attention(model_config: ml_collections.ConfigDict,
                      image_shape: tuple[int, int, int]) -> nn.Module:
  del image_shape  # The token width is read from the input.
  return ChannelAttentionAnchor(**_common(model_config))


def patch_attention(model_config: ml_collections.ConfigDict,
                    image_shape: tuple[int, int, int]) -> nn.Module:
  height, width, _ = image_shape
  p = model_config.anchor_patch_size
  if height % p or width % p:
    raise ConfigError(f'model.anchor_patch_size is {p}, which does not divide the {height}x'
                      f'{width} images; use a divisor of {height} and {width}')
  return PatchAttentionAnchor(patch_size=p, embed_dim=model_config.anchor_embed_dim,
                              **_common(model_config))


def constant_noise(model_config: ml_collections.ConfigDict,
                   image_shape: tuple[int, int, int]) -> nn.Module:
  del image_shape
  return ConstantNoiseAnchor(latent_dim=model_config.latent_dim,
                             noise_scale=model_config.anchor_noise_scale)


ANCHORS.update(channel_attention=channel_attention, patch_attention=patch_attention,
               constant_noise=constant_noise)
# Config validation reads this list; extend it in place so anyone holding a reference sees the
# names, keeping 'none' first.
_names = config_lib.EXTRA_CHOICES.setdefault('model.anchor', ['none'])
_names.extend(name for name in ANCHORS if name not in _names)
