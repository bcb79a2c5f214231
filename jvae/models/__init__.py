"""Models built from config: `build_model(config.model, image_shape)`."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jvae.config import ConfigError
from jvae.models import autoencoders, decoders, encoders

# Anchor modules for the VAE's noise mask, by `model.anchor` name (system issues register theirs).
ANCHORS: dict[str, Callable[[ml_collections.ConfigDict, tuple[int, int, int]], nn.Module]] = {}


def decoder_features(model_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The decoder's channel plan; () in config mirrors the encoder with an output conv."""
  if model_config.decoder_features:
    return tuple(model_config.decoder_features)
  enc = tuple(model_config.encoder_features)
  return (enc[-1],) + enc[::-1]


def check_image_shape(model_config: ml_collections.ConfigDict,
                      image_shape: tuple[int, int, int]) -> None:
  """Raises ConfigError when the conv stack cannot map `image_shape` back onto itself."""
  if model_config.encoder != 'conv' and model_config.decoder != 'conv':
    return
  stages = len(model_config.encoder_features)
  scale = model_config.strides**stages
  height, width, _ = image_shape
  if height % scale or width % scale:
    raise ConfigError(
        f'images of {height}x{width} do not divide by {scale} = model.strides ** '
        f'len(model.encoder_features) ({model_config.strides}**{stages}); set data.image_size '
        f'to a multiple of {scale} or change the conv stack')
  if model_config.decoder == 'conv':
    n = len(decoder_features(model_config))
    if n not in (stages, stages + 1):
      raise ConfigError(
          f'model.decoder_features has {n} entries; allowed: {stages} (last stage outputs the '
          f'image) or {stages + 1} (an output conv follows), for {stages} encoder stages')
  if model_config.skip_stages >= stages:
    raise ConfigError(f'model.skip_stages is {model_config.skip_stages}; allowed: 0 to '
                      f'{stages - 1} for {stages} encoder stages')
  if model_config.skip_stages:
    encoder = tuple(model_config.encoder_features)
    decoder = decoder_features(model_config)
    for stage in range(model_config.skip_stages):
      if decoder[stage + 1] != encoder[-(stage + 2)]:
        raise ConfigError(
            f'model.skip_stages={model_config.skip_stages} adds encoder stage '
            f'{stages - stage - 2} ({encoder[-(stage + 2)]} channels) to decoder stage {stage} '
            f'({decoder[stage + 1]} channels); set model.decoder_features so they match, e.g. '
            f'{encoder[::-1]}')


def build_model(model_config: ml_collections.ConfigDict,
                image_shape: tuple[int, int, int]) -> nn.Module:
  """Builds the VAE or AE of `model_config` for images of `image_shape` (H, W, C)."""
  check_image_shape(model_config, image_shape)
  m = model_config
  dtype = jnp.dtype(m.dtype)
  if m.encoder == 'conv':
    encoder = encoders.ConvEncoder(
        features=tuple(m.encoder_features), kernel_size=m.kernel_size, strides=m.strides,
        padding=m.padding, resnet_blocks=m.resnet_blocks, hidden_dims=tuple(m.hidden_dims),
        activation=m.activation, norm=m.norm, dropout_rate=m.dropout_rate,
        conv_impl=m.conv_impl, dtype=dtype)
  else:
    encoder = encoders.MLPEncoder(hidden_dims=tuple(m.hidden_dims), activation=m.activation,
                                  dropout_rate=m.dropout_rate, dtype=dtype)
  if m.decoder == 'conv':
    decoder = decoders.ConvDecoder(
        image_shape=image_shape, features=decoder_features(m),
        num_stages=len(m.encoder_features), kernel_size=m.kernel_size, strides=m.strides,
        padding=m.padding, output_kernel_size=m.output_kernel_size,
        resnet_blocks=m.resnet_blocks, hidden_dims=tuple(m.decoder_hidden_dims),
        activation=m.activation, norm=m.norm, dropout_rate=m.dropout_rate,
        conv_impl=m.conv_impl, conv_transpose_impl=m.conv_transpose_impl,
        skip_stages=m.skip_stages, dtype=dtype)
  else:
    hidden = tuple(m.decoder_hidden_dims) or tuple(m.hidden_dims)[::-1]
    decoder = decoders.MLPDecoder(image_shape=image_shape, hidden_dims=hidden,
                                  activation=m.activation, dropout_rate=m.dropout_rate,
                                  dtype=dtype)
  common = dict(encoder=encoder, decoder=decoder, latent_dim=m.latent_dim,
                output_activation=m.output_activation, conditioning=m.conditioning,
                num_classes=m.num_classes, label_embedding_dim=m.label_embedding_dim)
  if m.kind == 'ae':
    return autoencoders.Autoencoder(**common)
  anchor = None
  if m.anchor != 'none':
    if m.anchor not in ANCHORS:
      raise ConfigError(f'model.anchor {m.anchor!r}; allowed: none, {", ".join(ANCHORS)}')
    anchor = ANCHORS[m.anchor](m, image_shape)
  return autoencoders.VAE(anchor=anchor, **common)


# Imported last, once ANCHORS exists: it registers SAAAE's anchors there and with validation.
from jvae.models import anchors  # noqa: E402, F401
