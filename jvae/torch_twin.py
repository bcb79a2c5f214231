"""PyTorch twins of jvae models, for the benchmark (`python -m jvae.bench`) and its cross-checks.

This module imports torch, which is an optional extra (`pip install -e '.[bench]'`): nothing in
the library imports it; only `jvae.bench` does, lazily, when torch is installed.

`build_twin(config.model, image_shape)` returns a `torch.nn.Module` that computes what
`jvae.models.build_model` computes, layer for layer, on NCHW images:

- conv and MLP encoders and decoders, ResNet blocks, encoder-decoder skip stages, the stride-1
  output conv, label conditioning (one-hot or a learned embedding), the output activation;
- convolutions with flax 'SAME' padding (TensorFlow's: extra padding at the end, e.g. (0, 1) for
  k=3, s=2) or an int (PyTorch's symmetric padding); transposed convolutions with PyTorch's
  scatter semantics, which jvae's `ConvTranspose` already has (so its kernel loads without a
  flip), cropped to the same geometry;
- BatchNorm with batch statistics in training (flax momentum 0.9 = torch momentum 0.1, eps 1e-5 in
  both), dropout (element-wise in both; outputs only agree with dropout_rate=0), GELU with the
  tanh approximation (flax's default), leaky ReLU with slope 0.01 (both defaults);
- VAE (Gaussian posterior, z = mu + exp(logvar / 2) * eps) and AE kinds, and SAAAE's anchors
  ('channel_attention', 'patch_attention': one head of self-attention with Dense projections).

The twin's modules carry the flax module names (`encoder.Conv_0`, `decoder.ConvTranspose_2`,
`mu`, ...), so `load_jax_params(twin, params, batch_stats)` copies a jvae parameter tree into it
by name and refuses trees that do not match exactly, and `export_params(twin)` returns the twin's
parameters in the jvae layout for comparisons. Flatten order: jvae flattens NHWC features, so the
twin permutes NCHW -> NHWC before a flatten and NHWC -> NCHW after the decoder's reshape (the
weights load unchanged).

`objective` is `jvae.losses.objective` (sums over pixels, mean over the batch, closed-form KL,
free bits, beta) and `TwinTrainer` is the train step: loss, backward, global-norm clipping
(`clip_grad_norm_`, as `optax.clip_by_global_norm`), then Adam or AdamW with optax's defaults
(betas 0.9, 0.999, eps 1e-8, eps_root 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jvae.models import decoder_features
from jvae.models.decoders import _same_size_output_padding
from jvae.models.layers import conv_output_padding, conv_transpose_geometry

ANCHORS = ('channel_attention', 'patch_attention')


class UnsupportedModel(ValueError):
  """The model config uses something the twin does not reproduce. The message says what."""


def check_supported(model_config: ml_collections.ConfigDict) -> None:
  """Raises UnsupportedModel for model configs the twin cannot reproduce."""
  m = model_config
  if m.dtype != 'float32':
    raise UnsupportedModel(f'model.dtype={m.dtype!r} (the twin computes in float32)')
  if m.anchor != 'none' and m.anchor not in ANCHORS:
    raise UnsupportedModel(f'model.anchor={m.anchor!r}')
  if m.kind not in ('vae', 'ae'):
    raise UnsupportedModel(f'model.kind={m.kind!r}')


def _activation(name: str) -> nn.Module:
  if name == 'relu':
    return nn.ReLU()
  if name == 'silu':
    return nn.SiLU()
  if name == 'gelu':
    return nn.GELU(approximate='tanh')  # flax.linen.gelu defaults to approximate=True
  if name == 'leaky_relu':
    return nn.LeakyReLU(0.01)
  if name == 'tanh':
    return nn.Tanh()
  raise UnsupportedModel(f'activation {name!r}')


def _output_activation(name: str):
  if name == 'sigmoid':
    return torch.sigmoid
  if name == 'tanh':
    return torch.tanh
  if name == 'none':
    return lambda x: x
  raise UnsupportedModel(f'model.output_activation={name!r}')


def _tensor(value: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(value, dtype=np.float32, copy=True))


def _nhwc_flatten(x: torch.Tensor) -> torch.Tensor:
  """[B, C, H, W] -> [B, H*W*C] in jvae's (NHWC) order."""
  return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------- layers
# Each leaf layer loads its flax parameters (`load`) and returns them in the flax layout
# (`export`); containers recurse by child name.


class Twin(nn.Module):
  """A container whose children are named like the flax submodules they mirror."""

  def load(self, params: Mapping, stats: Mapping | None, path: str) -> set[str]:
    loaded = set()
    for name, child in self.named_children():
      if isinstance(child, Twin) or hasattr(child, 'load'):
        sub_params = params.get(name, {}) if params is not None else {}
        sub_stats = stats.get(name) if stats is not None else None
        loaded |= child.load(sub_params, sub_stats, f'{path}/{name}')
    return loaded

  def export(self) -> tuple[dict, dict]:
    params, stats = {}, {}
    for name, child in self.named_children():
      if isinstance(child, Twin) or hasattr(child, 'export'):
        p, s = child.export()
        if p:
          params[name] = p
        if s:
          stats[name] = s
    return params, stats


def _take(params: Mapping, key: str, path: str, shape: tuple[int, ...]) -> np.ndarray:
  if key not in params:
    raise ValueError(f'the jvae parameters have no {path}/{key}; the twin needs one of shape '
                     f'{shape}')
  value = np.asarray(params[key], np.float32)
  if value.shape != tuple(shape):
    raise ValueError(f'{path}/{key} has shape {value.shape}, the twin expects {tuple(shape)}')
  return value


class Dense(nn.Linear):
  """flax nn.Dense: kernel [in, out] -> torch weight [out, in]."""

  def load(self, params, stats, path):
    del stats
    kernel = _take(params, 'kernel', path, (self.in_features, self.out_features))
    bias = _take(params, 'bias', path, (self.out_features,))
    with torch.no_grad():
      self.weight.copy_(_tensor(kernel.T))
      self.bias.copy_(_tensor(bias))
    return {f'{path}/kernel', f'{path}/bias'}

  def export(self):
    return {'kernel': self.weight.detach().numpy().T.copy(),
            'bias': self.bias.detach().numpy().copy()}, {}


class Conv(nn.Module):
  """jvae.models.layers.Conv on NCHW inputs of a known size: kernel [k, k, Cin, Cout] ->
  weight [Cout, Cin, k, k]; flax 'SAME' padding becomes an explicit (possibly asymmetric) pad."""

  def __init__(self, in_features: int, features: int, kernel_size: int, strides: int,
               padding: int | str, use_bias: bool, in_hw: tuple[int, int]):
    super().__init__()
    pads = [conv_output_padding(size, kernel_size, strides, padding) for size in in_hw]
    symmetric = all(lo == hi for lo, hi in pads) and pads[0][0] == pads[1][0]
    self.conv = nn.Conv2d(in_features, features, kernel_size, strides,
                          padding=pads[0][0] if symmetric else 0, bias=use_bias)
    # F.pad takes the last axis first: (w_lo, w_hi, h_lo, h_hi).
    self.pad = None if symmetric else (pads[1][0], pads[1][1], pads[0][0], pads[0][1])
    self.out_hw = tuple((size + lo + hi - kernel_size) // strides + 1
                        for size, (lo, hi) in zip(in_hw, pads, strict=True))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.pad is not None:
      x = F.pad(x, self.pad)
    return self.conv(x)

  def load(self, params, stats, path):
    del stats
    w = self.conv.weight
    cout, cin, k, _ = w.shape
    kernel = _take(params, 'kernel', path, (k, k, cin, cout))
    loaded = {f'{path}/kernel'}
    with torch.no_grad():
      w.copy_(_tensor(kernel.transpose(3, 2, 0, 1)))
      if self.conv.bias is not None:
        self.conv.bias.copy_(_tensor(_take(params, 'bias', path, (cout,))))
        loaded.add(f'{path}/bias')
    return loaded

  def export(self):
    out = {'kernel': self.conv.weight.detach().numpy().transpose(2, 3, 1, 0).copy()}
    if self.conv.bias is not None:
      out['bias'] = self.conv.bias.detach().numpy().copy()
    return out, {}


class ConvTranspose(nn.Module):
  """jvae.models.layers.ConvTranspose (PyTorch scatter semantics) on NCHW inputs of a known
  size: kernel [k, k, Cin, Cout] -> ConvTranspose2d weight [Cin, Cout, k, k], no flip.

  Where the jvae geometry (crop at the start, output size) is expressible as ConvTranspose2d's
  padding and output_padding (every int padding, and 'SAME' with k - s even and >= 0) it is used
  directly; otherwise (e.g. 'SAME' with k=3, s=2) the full scatter result is cropped.
  """

  def __init__(self, in_features: int, features: int, kernel_size: int, strides: int,
               padding: int | str, output_padding: int, use_bias: bool, in_hw: tuple[int, int]):
    super().__init__()
    k, s = kernel_size, strides
    geometry = [conv_transpose_geometry(size, k, s, padding, output_padding) for size in in_hw]
    crops = [g[0] for g in geometry]
    self.out_hw = tuple(g[1] for g in geometry)
    native = crops[0] == crops[1]
    torch_op = []
    for size, crop, out in zip(in_hw, crops, self.out_hw, strict=True):
      op = out - ((size - 1) * s + k - 2 * crop)
      torch_op.append(op)
      native = native and 0 <= op < s
    if native and torch_op[0] != torch_op[1]:
      native = False
    self.native = native
    self.conv = nn.ConvTranspose2d(in_features, features, k, s,
                                   padding=crops[0] if native else 0,
                                   output_padding=torch_op[0] if native else 0,
                                   bias=use_bias)
    self.crops = tuple(crops)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.native:
      return self.conv(x)
    y = F.conv_transpose2d(x, self.conv.weight, None, self.conv.stride)
    (ch, cw), (oh, ow) = self.crops, self.out_hw
    y = y[:, :, ch:ch + oh, cw:cw + ow]
    if y.shape[2] < oh or y.shape[3] < ow:  # zeros past the end of the full result
      y = F.pad(y, (0, ow - y.shape[3], 0, oh - y.shape[2]))
    if self.conv.bias is not None:
      y = y + self.conv.bias[:, None, None]
    return y

  def load(self, params, stats, path):
    del stats
    w = self.conv.weight
    cin, cout, k, _ = w.shape
    kernel = _take(params, 'kernel', path, (k, k, cin, cout))
    loaded = {f'{path}/kernel'}
    with torch.no_grad():
      w.copy_(_tensor(kernel.transpose(2, 3, 0, 1)))
      if self.conv.bias is not None:
        self.conv.bias.copy_(_tensor(_take(params, 'bias', path, (cout,))))
        loaded.add(f'{path}/bias')
    return loaded

  def export(self):
    out = {'kernel': self.conv.weight.detach().numpy().transpose(2, 3, 0, 1).copy()}
    if self.conv.bias is not None:
      out['bias'] = self.conv.bias.detach().numpy().copy()
    return out, {}


class BatchNorm(nn.BatchNorm2d):
  """flax nn.BatchNorm(momentum=0.9, epsilon=1e-5) over NHWC = BatchNorm2d(momentum=0.1,
  eps=1e-5) over NCHW. Training normalises with the batch's biased variance in both; the running
  variance is updated with the biased variance in flax and the unbiased one in torch."""

  def __init__(self, features: int):
    super().__init__(features, eps=1e-5, momentum=0.1)

  def load(self, params, stats, path):
    n = self.num_features
    loaded = {f'{path}/scale', f'{path}/bias'}
    with torch.no_grad():
      self.weight.copy_(_tensor(_take(params, 'scale', path, (n,))))
      self.bias.copy_(_tensor(_take(params, 'bias', path, (n,))))
      if stats:
        self.running_mean.copy_(_tensor(_take(stats, 'mean', path, (n,))))
        self.running_var.copy_(_tensor(_take(stats, 'var', path, (n,))))
    return loaded

  def export(self):
    return ({'scale': self.weight.detach().numpy().copy(),
             'bias': self.bias.detach().numpy().copy()},
            {'mean': self.running_mean.numpy().copy(), 'var': self.running_var.numpy().copy()})


class Embed(nn.Embedding):
  """flax nn.Embed: embedding [num, dim], the same layout."""

  def load(self, params, stats, path):
    del stats
    with torch.no_grad():
      self.weight.copy_(_tensor(_take(params, 'embedding', path,
                                      (self.num_embeddings, self.embedding_dim))))
    return {f'{path}/embedding'}

  def export(self):
    return {'embedding': self.weight.detach().numpy().copy()}, {}


# ------------------------------------------------------------------------------------- blocks


class NormActDrop(Twin):
  def __init__(self, features: int, activation: str, norm: str, dropout_rate: float):
    super().__init__()
    if norm == 'batch':
      self.BatchNorm_0 = BatchNorm(features)
    elif norm != 'none':
      raise UnsupportedModel(f'model.norm={norm!r}')
    self.act = _activation(activation)
    self.drop = nn.Dropout(dropout_rate) if dropout_rate > 0 else None

  def forward(self, x):
    if hasattr(self, 'BatchNorm_0'):
      x = self.BatchNorm_0(x)
    x = self.act(x)
    return self.drop(x) if self.drop is not None else x


class ResNetBlock(Twin):
  def __init__(self, features: int, activation: str, norm: str, hw: tuple[int, int]):
    super().__init__()
    self.NormActDrop_0 = NormActDrop(features, activation, norm, 0.0)
    self.Conv_0 = Conv(features, features, 3, 1, 'SAME', norm == 'none', hw)
    self.NormActDrop_1 = NormActDrop(features, activation, norm, 0.0)
    self.Conv_1 = Conv(features, features, 3, 1, 'SAME', True, hw)

  def forward(self, x):
    h = self.Conv_0(self.NormActDrop_0(x))
    h = self.Conv_1(self.NormActDrop_1(h))
    return x + h


class ConvEncoder(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               condition_dim: int):
    super().__init__()
    hw, channels = tuple(image_shape[:2]), image_shape[2]
    self.stages = []
    blocks = 0
    for i, features in enumerate(m.encoder_features):
      conv = Conv(channels, features, m.kernel_size, m.strides, m.padding, m.norm == 'none', hw)
      self.add_module(f'Conv_{i}', conv)
      self.add_module(f'NormActDrop_{i}',
                      NormActDrop(features, m.activation, m.norm, m.dropout_rate))
      hw, channels = conv.out_hw, features
      names = []
      for _ in range(m.resnet_blocks):
        self.add_module(f'ResNetBlock_{blocks}', ResNetBlock(features, m.activation, m.norm, hw))
        names.append(f'ResNetBlock_{blocks}')
        blocks += 1
      self.stages.append((f'Conv_{i}', f'NormActDrop_{i}', names))
    width = hw[0] * hw[1] * channels + condition_dim
    for j, hidden in enumerate(m.hidden_dims):
      self.add_module(f'Dense_{j}', Dense(width, hidden))
      width = hidden
    self.num_dense = len(m.hidden_dims)
    self.act = _activation(m.activation)
    self.out_features = width

  def forward(self, x, condition=None):
    stage_outputs = []
    h = x
    for conv, norm, resnet in self.stages:
      h = getattr(self, norm)(getattr(self, conv)(h))
      for name in resnet:
        h = getattr(self, name)(h)
      stage_outputs.append(h)
    h = _nhwc_flatten(h)
    if condition is not None:
      h = torch.cat([h, condition], dim=-1)
    for j in range(self.num_dense):
      h = self.act(getattr(self, f'Dense_{j}')(h))
    return h, stage_outputs


class MLPEncoder(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               condition_dim: int):
    super().__init__()
    width = int(np.prod(image_shape)) + condition_dim
    for j, hidden in enumerate(m.hidden_dims):
      self.add_module(f'Dense_{j}', Dense(width, hidden))
      width = hidden
    self.num_dense = len(m.hidden_dims)
    self.act = _activation(m.activation)
    self.drop = nn.Dropout(m.dropout_rate) if m.dropout_rate > 0 else None
    self.out_features = width

  def forward(self, x, condition=None):
    h = _nhwc_flatten(x)
    if condition is not None:
      h = torch.cat([h, condition], dim=-1)
    for j in range(self.num_dense):
      h = self.act(getattr(self, f'Dense_{j}')(h))
      if self.drop is not None:
        h = self.drop(h)
    return h, []


class ConvDecoder(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               in_features: int):
    super().__init__()
    height, width, channels = image_shape
    features = decoder_features(m)
    num_stages = len(m.encoder_features)
    scale = m.strides**num_stages
    self.act = _activation(m.activation)
    dense = 0
    for hidden in m.decoder_hidden_dims:
      self.add_module(f'Dense_{dense}', Dense(in_features, hidden))
      in_features = hidden
      dense += 1
    hw = (height // scale, width // scale)
    self.add_module(f'Dense_{dense}', Dense(in_features, hw[0] * hw[1] * features[0]))
    self.num_dense = dense + 1
    self.reshape = (hw[0], hw[1], features[0])
    output_padding = _same_size_output_padding(m.kernel_size, m.strides, m.padding)
    self.has_output_conv = len(features) == num_stages + 1
    self.skip_stages = m.skip_stages
    self.stages = []
    c_in, blocks = features[0], 0
    for stage in range(num_stages):
      is_image = not self.has_output_conv and stage == num_stages - 1
      c_out = channels if is_image else features[stage + 1]
      layer = ConvTranspose(c_in, c_out, m.kernel_size, m.strides, m.padding, output_padding,
                            is_image or m.norm == 'none', hw)
      self.add_module(f'ConvTranspose_{stage}', layer)
      hw, c_in = layer.out_hw, c_out
      if is_image:
        self.stages.append((f'ConvTranspose_{stage}', None, []))
        break
      self.add_module(f'NormActDrop_{stage}',
                      NormActDrop(c_out, m.activation, m.norm, m.dropout_rate))
      names = []
      for _ in range(m.resnet_blocks):
        self.add_module(f'ResNetBlock_{blocks}', ResNetBlock(c_out, m.activation, m.norm, hw))
        names.append(f'ResNetBlock_{blocks}')
        blocks += 1
      self.stages.append((f'ConvTranspose_{stage}', f'NormActDrop_{stage}', names))
    if self.has_output_conv:
      self.Conv_0 = Conv(c_in, channels, m.output_kernel_size, 1, 'SAME', True, hw)

  def forward(self, z, condition=None, encoder_stages=()):
    h = z if condition is None else torch.cat([z, condition], dim=-1)
    for j in range(self.num_dense):
      h = self.act(getattr(self, f'Dense_{j}')(h))
    h = h.reshape(h.shape[0], *self.reshape).permute(0, 3, 1, 2)  # NHWC order -> NCHW
    for stage, (conv, norm, resnet) in enumerate(self.stages):
      h = getattr(self, conv)(h)
      if norm is None:
        break
      if stage < self.skip_stages:
        h = h + encoder_stages[-(stage + 2)]
      h = getattr(self, norm)(h)
      for name in resnet:
        h = getattr(self, name)(h)
    if self.has_output_conv:
      h = self.Conv_0(h)
    return h


class MLPDecoder(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               in_features: int):
    super().__init__()
    hidden_dims = tuple(m.decoder_hidden_dims) or tuple(m.hidden_dims)[::-1]
    for j, hidden in enumerate(hidden_dims):
      self.add_module(f'Dense_{j}', Dense(in_features, hidden))
      in_features = hidden
    self.add_module(f'Dense_{len(hidden_dims)}', Dense(in_features, int(np.prod(image_shape))))
    self.num_hidden = len(hidden_dims)
    self.act = _activation(m.activation)
    self.drop = nn.Dropout(m.dropout_rate) if m.dropout_rate > 0 else None
    self.image_shape = tuple(image_shape)

  def forward(self, z, condition=None, encoder_stages=()):
    del encoder_stages
    h = z if condition is None else torch.cat([z, condition], dim=-1)
    for j in range(self.num_hidden):
      h = self.act(getattr(self, f'Dense_{j}')(h))
      if self.drop is not None:
        h = self.drop(h)
    h = getattr(self, f'Dense_{self.num_hidden}')(h)
    return h.reshape(h.shape[0], *self.image_shape).permute(0, 3, 1, 2)


class LabelConditioning(Twin):
  def __init__(self, kind: str, num_classes: int, embedding_dim: int):
    super().__init__()
    self.kind, self.num_classes = kind, num_classes
    if kind == 'embedding':
      self.Embed_0 = Embed(num_classes, embedding_dim)
    elif kind != 'onehot':
      raise UnsupportedModel(f'model.conditioning={kind!r}')
    self.out_features = embedding_dim if kind == 'embedding' else num_classes

  def forward(self, labels):
    if self.kind == 'onehot':
      return F.one_hot(labels.long(), self.num_classes).float()
    return self.Embed_0(labels.long())


# ------------------------------------------------------------------------------------- anchors


class Attention(Twin):
  """jvae.models.anchors.OneHeadSelfAttention over [B, N, F] tokens."""

  def __init__(self, width: int, attention_dim: int):
    super().__init__()
    d = attention_dim or width
    self.query = Dense(width, d)
    self.key = Dense(width, d)
    self.value = Dense(width, d)
    self.out = Dense(d, width)
    self.scale = 1.0 / math.sqrt(d)

  def forward(self, tokens):
    q = self.query(tokens) * self.scale
    k = self.key(tokens)
    v = self.value(tokens)
    weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    return self.out(weights @ v)


def _anchor_outputs(a: torch.Tensor, normalization: str, kl_weighting: str) -> dict:
  """jvae.models.anchors.anchor_outputs."""
  if normalization == 'per_example':
    low = a.amin(dim=-1, keepdim=True)
    high = a.amax(dim=-1, keepdim=True)
  else:
    low, high = a.min(), a.max()
  a_norm = (a - low) / torch.clamp(high - low, min=1e-6)
  noise_mask = 1.0 - a_norm
  out = {'anchor': a_norm, 'noise_mask': noise_mask}
  if kl_weighting == 'noise_mask':
    out['kl_weights'] = noise_mask.detach()
  return out


class ChannelAttentionAnchor(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int]):
    super().__init__()
    h, w, c = image_shape
    self.attention = Attention(h * w, m.anchor_attention_dim)
    self.to_latent = Dense(c * h * w, m.latent_dim)
    self.normalization, self.kl_weighting = m.anchor_normalization, m.anchor_kl_weighting

  def forward(self, x):
    b, c, h, w = x.shape
    tokens = x.reshape(b, c, h * w)  # NCHW rows are already the channel tokens
    attended = self.attention(tokens)
    a = F.silu(self.to_latent(attended.reshape(b, -1)))
    return _anchor_outputs(a, self.normalization, self.kl_weighting)


class PatchAttentionAnchor(Twin):
  def __init__(self, m: ml_collections.ConfigDict, image_shape: tuple[int, int, int]):
    super().__init__()
    h, w, c = image_shape
    p = m.anchor_patch_size
    tokens = (h // p) * (w // p)
    self.p = p
    self.embed = Dense(p * p * c, m.anchor_embed_dim)
    self.position = nn.Parameter(torch.zeros(tokens, m.anchor_embed_dim))
    self.attention = Attention(m.anchor_embed_dim, m.anchor_attention_dim)
    self.to_latent = Dense(tokens * m.anchor_embed_dim, m.latent_dim)
    self.normalization, self.kl_weighting = m.anchor_normalization, m.anchor_kl_weighting

  def forward(self, x):
    b, c, h, w = x.shape
    p = self.p
    # jvae's NHWC patches: [B, H/p, p, W/p, p, C] -> [B, (H/p)(W/p), p*p*C] with (row, col, c).
    patches = x.permute(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, c)
    patches = patches.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)
    tokens = self.embed(patches) + self.position
    attended = self.attention(tokens)
    a = F.silu(self.to_latent(attended.reshape(b, -1)))
    return _anchor_outputs(a, self.normalization, self.kl_weighting)

  def load(self, params, stats, path):
    loaded = super().load(params, stats, path)
    with torch.no_grad():
      self.position.copy_(_tensor(_take(params, 'position', path, tuple(self.position.shape))))
    return loaded | {f'{path}/position'}

  def export(self):
    params, stats = super().export()
    params['position'] = self.position.detach().numpy().copy()
    return params, stats


# ------------------------------------------------------------------------------------- models


class AutoencoderTwin(Twin):
  """The VAE (kind='vae') or AE (kind='ae') of a jvae model config, on NCHW images."""

  def __init__(self, model_config: ml_collections.ConfigDict,
               image_shape: tuple[int, int, int]):
    super().__init__()
    m = model_config
    check_supported(m)
    self.kind = m.kind
    condition_dim = 0
    if m.conditioning != 'none':
      self.label_conditioning = LabelConditioning(m.conditioning, m.num_classes,
                                                  m.label_embedding_dim)
      condition_dim = self.label_conditioning.out_features
    self.encoder = (ConvEncoder if m.encoder == 'conv' else MLPEncoder)(m, image_shape,
                                                                         condition_dim)
    features = self.encoder.out_features
    if m.kind == 'vae':
      self.mu = Dense(features, m.latent_dim)
      self.logvar = Dense(features, m.latent_dim)
    else:
      self.code = Dense(features, m.latent_dim)
    decoder_in = m.latent_dim + condition_dim
    self.decoder = (ConvDecoder if m.decoder == 'conv' else MLPDecoder)(m, image_shape,
                                                                         decoder_in)
    if m.kind == 'vae' and m.anchor != 'none':
      anchor = ChannelAttentionAnchor if m.anchor == 'channel_attention' else \
          PatchAttentionAnchor
      self.anchor = anchor(m, image_shape)
    self.activate = _output_activation(m.output_activation)

  def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, sample: bool = True,
              eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """x [B, C, H, W] -> logits and reconstruction [B, C, H, W] (+ mu, logvar, z [B, D]).

    `eps` [B, D] replaces the standard normal draw of a sampled VAE latent (to replay a jvae
    step's draw); `sample=False` uses z = mu.
    """
    condition = None
    if hasattr(self, 'label_conditioning'):
      if labels is None:
        raise ValueError('this twin is conditioned on labels; pass labels [B]')
      condition = self.label_conditioning(labels).to(x.dtype)
    features, stages = self.encoder(x, condition)
    outputs = {}
    if self.kind == 'vae':
      mu, logvar = self.mu(features), self.logvar(features)
      outputs.update(mu=mu, logvar=logvar)
      noise_mask = None
      if hasattr(self, 'anchor'):
        outputs.update(self.anchor(x))
        noise_mask = outputs['noise_mask']
      if sample:
        if eps is None:
          eps = torch.randn_like(mu)
        if noise_mask is not None:
          eps = eps * noise_mask
        z = mu + torch.exp(0.5 * logvar) * eps
      else:
        z = mu
    else:
      z = self.code(features)
    logits = self.decoder(z, condition, stages)
    outputs.update(z=z, logits=logits, reconstruction=self.activate(logits))
    return outputs


def build_twin(model_config: ml_collections.ConfigDict,
               image_shape: tuple[int, int, int]) -> AutoencoderTwin:
  """The torch twin of `jvae.models.build_model(model_config, image_shape)` (float32, NCHW)."""
  return AutoencoderTwin(model_config, tuple(int(d) for d in image_shape))


def _flatten_paths(tree: Mapping, prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    path = f'{prefix}/{key}'
    if isinstance(value, Mapping):
      out.update(_flatten_paths(value, path))
    else:
      out[path] = value
  return out


def load_jax_params(twin: AutoencoderTwin, params: Mapping,
                    batch_stats: Mapping | None = None) -> None:
  """Copies a jvae parameter tree (and BatchNorm statistics) into `twin`.

  Raises ValueError when a parameter the twin needs is missing or misshapen, or when the tree
  holds parameters the twin has no place for.
  """
  params = _as_dicts(params)
  stats = _as_dicts(batch_stats) if batch_stats else None
  loaded = twin.load(params, stats, '')
  extra = sorted(set(_flatten_paths(params)) - loaded)
  if extra:
    raise ValueError(f'the twin has no place for the jvae parameters {", ".join(extra)}')


def export_params(twin: AutoencoderTwin) -> tuple[dict, dict]:
  """The twin's (params, batch_stats) as numpy trees in the jvae layout."""
  return twin.export()


def _as_dicts(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _as_dicts(v) for k, v in tree.items()}
  return np.asarray(tree)


# --------------------------------------------------------------------------------- loss, step


def _sum_per_image(x: torch.Tensor) -> torch.Tensor:
  return x.reshape(x.shape[0], -1).sum(dim=-1)


def reconstruction_nll(kind: str, logits: torch.Tensor, reconstruction: torch.Tensor,
                       target: torch.Tensor, gaussian_sigma: float = 1.0) -> torch.Tensor:
  """jvae.losses.reconstruction_nll: [B, C, H, W] -> [B], summed over pixels."""
  if kind == 'bernoulli':
    return _sum_per_image(F.binary_cross_entropy_with_logits(logits, target, reduction='none'))
  if kind == 'mse':
    return _sum_per_image(torch.square(reconstruction - target))
  if kind == 'l1':
    return _sum_per_image(torch.abs(reconstruction - target))
  if kind == 'gaussian':
    var = gaussian_sigma**2
    per_pixel = 0.5 * torch.square(reconstruction - target) / var + 0.5 * math.log(
        2 * math.pi * var)
    return _sum_per_image(per_pixel)
  raise UnsupportedModel(f'loss.reconstruction={kind!r}')


def objective(outputs: dict[str, torch.Tensor], target: torch.Tensor, beta: float,
              loss_config: ml_collections.ConfigDict) -> tuple[torch.Tensor, dict]:
  """jvae.losses.objective: the batch-mean loss and its parts."""
  reconstruction = reconstruction_nll(loss_config.reconstruction, outputs['logits'],
                                      outputs['reconstruction'], target,
                                      loss_config.gaussian_sigma).mean()
  metrics = {'reconstruction': reconstruction}
  loss = reconstruction
  if 'mu' in outputs:
    mu, logvar = outputs['mu'], outputs['logvar']
    kl_per_dim = 0.5 * (torch.exp(logvar) + torch.square(mu) - 1.0 - logvar)
    if 'kl_weights' in outputs:
      kl_per_dim = kl_per_dim * outputs['kl_weights']
    kl_per_dim = kl_per_dim.mean(dim=0)
    kl = kl_per_dim.sum()
    kl_in_loss = kl
    if loss_config.free_bits > 0:
      kl_in_loss = torch.clamp(kl_per_dim, min=loss_config.free_bits).sum()
    loss = reconstruction + beta * kl_in_loss
    metrics['kl'] = kl
  metrics['loss'] = loss
  return loss, metrics


def make_optimizer(params, train_config: ml_collections.ConfigDict) -> torch.optim.Optimizer:
  """torch Adam/AdamW with optax's defaults (betas 0.9, 0.999, eps 1e-8) and the config's lr."""
  lr = float(train_config.learning_rate)
  if train_config.optimizer == 'adam':
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
  if train_config.optimizer == 'adamw':
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=float(train_config.weight_decay))
  raise UnsupportedModel(f'train.optimizer={train_config.optimizer!r}')


class TwinTrainer:
  """The train step of a twin: loss, backward, clip_grad_norm_, Adam(W).

  With `compile=True` the forward pass and loss run through `torch.compile` (backward through
  its AOTAutograd graph); clipping and the optimizer stay eager in both forms.
  """

  def __init__(self, twin: AutoencoderTwin, config: ml_collections.ConfigDict,
               compile: bool = False, optimizer: torch.optim.Optimizer | None = None):
    self.twin = twin
    self.loss_config = config.loss
    self.clip = float(config.train.grad_clip_norm)
    self.params = [p for p in twin.parameters() if p.requires_grad]
    self.optimizer = optimizer or make_optimizer(self.params, config.train)

    def loss_fn(x, target, labels, beta, eps):
      outputs = twin(x, labels, sample=True, eps=eps)
      loss, metrics = objective(outputs, target, beta, self.loss_config)
      return loss, metrics

    self.loss_fn = torch.compile(loss_fn) if compile else loss_fn

  def step(self, x: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None,
           beta: float, lr: float | None = None, eps: torch.Tensor | None = None
           ) -> torch.Tensor:
    """One update on (x, target [B, C, H, W] float32, labels [B] or None); returns the loss."""
    if lr is not None:
      for group in self.optimizer.param_groups:
        group['lr'] = lr
    self.twin.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss, _ = self.loss_fn(x, target, labels, beta, eps)
    loss.backward()
    if self.clip > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.clip)
    self.optimizer.step()
    return loss.detach()
