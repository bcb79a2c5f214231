"""Models built from config: shapes, parameter layouts, conditioning and the impl switch."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.config import base_config
from jvae.models import build_model
from jvae.trainer import MINIMAL_XLA_OPTIMIZATION


def _jit(fn, **kwargs):
  # Compiling dominates these tiny tests; eager Flax would compile every op on its own.
  return jax.jit(fn, compiler_options=MINIMAL_XLA_OPTIMIZATION, **kwargs)


def _init(model, shape, labels=None):
  x = jnp.linspace(0, 1, int(np.prod(shape))).reshape(shape)
  variables = _jit(lambda: model.init(
      {'params': jax.random.key(0), 'latent': jax.random.key(1), 'dropout': jax.random.key(2)},
      x, labels))()
  return variables, x


def _shapes(params):
  return {'/'.join(k): v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}


def test_the_keras_cvae_layout_of_spec_s3():
  config = base_config().model
  config.latent_dim = 2
  config.conditioning = 'onehot'
  model = build_model(config, (28, 28, 1))
  variables, x = _init(model, (2, 28, 28, 1), jnp.array([3, 7]))
  shapes = _shapes(variables['params'])
  convs = sorted(v for k, v in shapes.items() if k.startswith('encoder') and 'kernel' in k
                 and len(v) == 4)
  assert convs == [(3, 3, 1, 32), (3, 3, 32, 64)]
  assert shapes['encoder/Dense_0/kernel'] == (7 * 7 * 64 + 10, 128)
  assert shapes['mu/kernel'] == (128, 2) and shapes['logvar/kernel'] == (128, 2)
  assert shapes['decoder/Dense_0/kernel'] == (2 + 10, 3136)
  transposed = [v for k, v in sorted(shapes.items()) if k.startswith('decoder/ConvTranspose')
                and k.endswith('kernel')]
  assert transposed == [(3, 3, 64, 64), (3, 3, 64, 32)]
  assert shapes['decoder/Conv_0/kernel'] == (3, 3, 32, 1)
  outputs = _jit(lambda v, x: model.apply(v, x, jnp.array([3, 7]),
                                          rngs={'latent': jax.random.key(3)}))(variables, x)
  assert outputs['reconstruction'].shape == (2, 28, 28, 1)
  assert outputs['mu'].shape == outputs['logvar'].shape == outputs['z'].shape == (2, 2)
  assert float(outputs['reconstruction'].min()) >= 0 and float(outputs['reconstruction'].max()) <= 1


def test_labels_change_the_decoded_image():
  config = base_config().model
  config.conditioning = 'embedding'
  model = build_model(config, (8, 8, 1))
  variables, _ = _init(model, (1, 8, 8, 1), jnp.array([0]))
  z = jnp.zeros((2, config.latent_dim))
  images = _jit(lambda v: model.apply(v, z, jnp.array([1, 2]), method='decode'))(variables)
  assert not np.allclose(images[0], images[1])
  assert variables['params']['label_conditioning']['Embed_0']['embedding'].shape == (10, 8)


def test_saaae_backbone_layout_last_stage_outputs_the_image():
  config = base_config().model
  config.encoder_features = (64, 128, 256, 512)
  config.decoder_features = (512, 256, 128, 64)
  config.kernel_size, config.padding = 4, 1
  config.hidden_dims = ()
  config.output_activation = 'tanh'
  model = build_model(config, (64, 64, 3))
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'latent': jax.random.key(1)}, jnp.zeros((1, 64, 64, 3))))
  shapes = _shapes(shapes['params'])
  assert shapes['mu/kernel'] == (4 * 4 * 512, 16)
  assert shapes['decoder/Dense_0/kernel'] == (16, 4 * 4 * 512)
  assert shapes['decoder/ConvTranspose_3/kernel'] == (4, 4, 64, 3)
  assert not any(k.startswith('decoder/Conv_') for k in shapes)


@pytest.mark.parametrize('encoder, kind, norm, resnet', [
    ('conv', 'vae', 'batch', 1), ('mlp', 'ae', 'none', 0), ('conv', 'ae', 'none', 0)])
def test_model_variants_map_images_to_images(encoder, kind, norm, resnet):
  config = base_config().model
  config.encoder = config.decoder = encoder
  config.kind, config.norm, config.resnet_blocks = kind, norm, resnet
  config.dropout_rate = 0.1
  config.encoder_features = (4, 8)
  model = build_model(config, (8, 8, 3))
  variables, x = _init(model, (2, 8, 8, 3))
  outputs, updates = _jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats'],
      rngs={'latent': jax.random.key(1), 'dropout': jax.random.key(2)}))(variables, x)
  assert outputs['reconstruction'].shape == (2, 8, 8, 3)
  assert ('batch_stats' in updates) == (norm == 'batch')
  assert ('mu' in outputs) == (kind == 'vae')


def test_skip_connections_carry_encoder_features_into_the_decoder():
  config = base_config().model
  config.encoder_features = (4, 8, 16)
  config.decoder_features = (16, 8, 4)  # The restoration VAE's plan: stage outputs mirror.
  config.skip_stages = 2
  model = build_model(config, (16, 16, 1))
  variables, x = _init(model, (1, 16, 16, 1))
  _, _, stages = _jit(lambda v, x: model.apply(v, x, method='encode'))(variables, x)
  z = jnp.zeros((1, config.latent_dim))
  decode = _jit(lambda v, stages: model.apply(v, z, None, False, stages, method='decode'))
  plain = decode(variables, stages)
  changed = [stages[0] + 1.0] + list(stages[1:])
  assert not np.allclose(plain, decode(variables, changed))
  # The deepest stage is never added (the decoder starts from the latent there).
  deepest = list(stages[:-1]) + [stages[-1] + 1.0]
  np.testing.assert_array_equal(plain, decode(variables, deepest))


@pytest.mark.parametrize('conv_impl,conv_transpose_impl', [
    ('fast', 'fast'), ('patches', 'shared'), ('shifted', 'scatter'), ('patches', 'phases')])
def test_rewritten_conv_impls_compute_the_same_model(conv_impl, conv_transpose_impl):
  config = base_config().model
  # Decoder (8, 8, 16): its output conv 16 -> 1 is one 'fast' runs as 'shifted'.
  config.encoder_features = (16, 8)
  config.conv_impl = config.conv_transpose_impl = 'native'
  native = build_model(config, (8, 8, 1))
  variables, x = _init(native, (2, 8, 8, 1))
  config.conv_impl, config.conv_transpose_impl = conv_impl, conv_transpose_impl
  rewritten = build_model(config, (8, 8, 1))
  a = _jit(lambda v, x: native.apply(v, x, sample=False)['logits'])(variables, x)
  b = _jit(lambda v, x: rewritten.apply(v, x, sample=False)['logits'])(variables, x)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
