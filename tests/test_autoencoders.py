"""The S5 autoencoder configs: each builds and maps 64x64 images back onto themselves with the
parameter layout of the source's part (shapes from `jax.eval_shape`, no compiling)."""

import functools
import importlib.util

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from jvae import trainer
from jvae.config import validate_config
from jvae.models import build_model

LFW_CONFIGS = ('lfw_mlp_ae', 'lfw_conv_ae', 'lfw_dae', 'lfw_improved_ae')
IMAGE = (64, 64, 1)


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def abstract_variables(model, shape):
  """Shapes of model.init's variables for a [*shape] batch."""
  def init(x):
    return model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x)
  return jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))


def shapes(tree):
  return {'/'.join(k): v.shape for k, v in flax.traverse_util.flatten_dict(tree).items()}


def kernels(params, prefix, ndim):
  """Kernel shapes under `prefix` with `ndim` dims, in layer order."""
  found = [(k, v) for k, v in shapes(params).items()
           if k.startswith(prefix) and k.endswith('kernel') and len(v) == ndim]
  return [v for _, v in sorted(found, key=lambda kv: int(kv[0].split('/')[1].split('_')[-1]))]


@pytest.mark.parametrize('name', LFW_CONFIGS)
def test_lfw_configs_are_autoencoders_from_64x64x1_to_64x64x1_with_a_256_code(name):
  config = load_config(name)
  validate_config(config)
  assert config.data.source == 'npz:../shared/data/lfw_gray64_subset.npz'
  assert (REPO / config.data.source.removeprefix('npz:')).is_file()  # relative to the repo root
  assert (config.data.image_size, config.data.channels) == (64, 1)
  assert config.model.kind == 'ae' and config.loss.reconstruction == 'mse'
  model = build_model(config.model, IMAGE)
  variables = abstract_variables(model, (2, *IMAGE))
  assert shapes(variables['params'])['code/kernel'][1] == 256
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                           jax.ShapeDtypeStruct((2, *IMAGE), jnp.float32))
  assert outputs['reconstruction'].shape == (2, *IMAGE) and outputs['z'].shape == (2, 256)


def test_part1_is_an_mlp():
  config = load_config('lfw_mlp_ae')
  params = abstract_variables(build_model(config.model, IMAGE), (1, *IMAGE))['params']
  assert not [v for v in shapes(params).values() if len(v) == 4]  # no conv kernels
  assert kernels(params, 'encoder', 2) == [(4096, 1024), (1024, 512)]
  assert shapes(params)['code/kernel'] == (512, 256)
  assert kernels(params, 'decoder', 2) == [(256, 512), (512, 1024), (1024, 4096)]


@pytest.mark.parametrize('name', ('lfw_conv_ae', 'lfw_dae'))
def test_part2_and_part3_are_the_three_stage_conv_autoencoder(name):
  config = load_config(name)
  variables = abstract_variables(build_model(config.model, IMAGE), (1, *IMAGE))
  params = variables['params']
  assert kernels(params, 'encoder', 4) == [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
  assert shapes(params)['code/kernel'] == (8 * 8 * 128, 256)
  assert kernels(params, 'decoder', 2) == [(256, 8 * 8 * 128)]
  # The last transposed conv outputs the image: no extra output conv.
  assert kernels(params, 'decoder', 4) == [(3, 3, 128, 64), (3, 3, 64, 32), (3, 3, 32, 1)]
  assert 'batch_stats' not in variables and config.model.dropout_rate == 0


def test_part3_trains_on_gaussian_noise_against_clean_targets():
  dae, cae = load_config('lfw_dae'), load_config('lfw_conv_ae')
  assert dae.task == 'denoise' and dae.corruption.kind == 'gaussian_noise'
  assert 0 < dae.corruption.strength < 1  # noise_factor on [0, 1] images
  assert dae.model == cae.model  # the same network as Part 2, trained on noisy inputs


def test_part4_has_four_conv_stages_with_batchnorm_and_dropout():
  config = load_config('lfw_improved_ae')
  model = build_model(config.model, IMAGE)
  variables = abstract_variables(model, (1, *IMAGE))
  params, stats = variables['params'], shapes(variables['batch_stats'])
  assert kernels(params, 'encoder', 4) == [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 128),
                                           (3, 3, 128, 256)]
  assert shapes(params)['code/kernel'] == (4 * 4 * 256, 256)
  assert kernels(params, 'decoder', 4) == [(3, 3, 256, 128), (3, 3, 128, 64), (3, 3, 64, 32),
                                           (3, 3, 32, 1)]
  # A BatchNorm after every conv but the image output, each with running mean and variance.
  means = sorted(v for k, v in stats.items() if k.endswith('mean'))
  assert means == sorted([(32,), (64,), (128,), (256,), (128,), (64,), (32,)])
  assert len([k for k in stats if k.endswith('var')]) == 7
  # Convs followed by BatchNorm carry no bias (it would be cancelled).
  assert not [k for k in shapes(params) if k.startswith('encoder/Conv') and k.endswith('bias')]
  assert model.encoder.dropout_rate == model.decoder.dropout_rate == config.model.dropout_rate > 0


def test_part4_uses_batch_statistics_and_dropout_in_training_only():
  config = load_config('lfw_improved_ae')
  model = build_model(config.model, IMAGE)
  x = jax.random.uniform(jax.random.key(0), (3, *IMAGE))
  # Image 0 twice, in two different batch-mates' company: [x0, x1, x2, x0, .5, .5].
  pair = jnp.concatenate([x, x[:1], jnp.full((2, *IMAGE), 0.5)])

  @functools.partial(jax.jit, compiler_options=trainer.MINIMAL_XLA_OPTIMIZATION)
  def run(pair):
    variables = model.init({'params': jax.random.key(1)}, pair)
    rngs = {'dropout': jax.random.key(2)}
    trained, updates = model.apply(variables, pair, train=True, rngs=rngs, mutable=['batch_stats'])
    evaluated = model.apply(variables, pair, train=False, rngs=rngs)
    return (variables['batch_stats'], updates['batch_stats'], trained['reconstruction'],
            evaluated['reconstruction'])

  initial_stats, stats, trained, evaluated = run(pair)
  # Training draws a dropout mask per example: the same image comes out differently.
  assert not np.allclose(trained[0], trained[3])
  # Eval has no dropout and normalises with running averages, not with the batch's statistics.
  np.testing.assert_allclose(evaluated[0], evaluated[3], atol=1e-6)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, initial_stats)
  assert all(jax.tree.leaves(moved))  # training updates every running average


def test_folder_config_reads_an_image_folder_into_64x64_rgb(tmp_path):
  rng = np.random.default_rng(0)
  for split, count in (('train', 3), ('test', 2)):
    for i in range(count):
      folder = tmp_path / split / ('cats' if i % 2 else 'dogs')
      folder.mkdir(parents=True, exist_ok=True)
      size = (40 + 13 * i, 30 + 7 * i)
      mode = 'L' if i == 1 else 'RGB'
      pixels = rng.integers(0, 256, (size[1], size[0], 1 if mode == 'L' else 3), np.uint8)
      Image.fromarray(pixels.squeeze(-1) if mode == 'L' else pixels, mode).save(
          folder / f'{i}.png')
  config = load_config('folder_conv_ae')
  assert config.data.source.startswith('folder:')
  config.data.source = f'folder:{tmp_path}'
  experiment = trainer.create_experiment(config)
  assert experiment.image_shape == (64, 64, 3) and len(experiment.train_source) == 3
  assert experiment.eval_source.info.class_names == ('cats', 'dogs')
  variables = abstract_variables(experiment.model, (2, 64, 64, 3))
  assert shapes(variables['params'])['code/kernel'] == (8 * 8 * 128, 256)
