"""Each S1/S2 config file trains one step and evaluates, shrunk to tiny widths and images.

The shrink keeps what the config chooses (data source, anchor, masking, loss, layer kinds, kernel
sizes, strides, padding, activations) and only lowers sizes: image side, channel widths, latent,
batch and step count, so that every shipped system config is exercised end to end in seconds.
"""

import contextlib
import runpy

import jax
import numpy as np
import pytest
from conftest import REPO

from jvae import parallel, trainer

S1_S2_CONFIGS = ('saaae_stl10', 'saaae_cifar64', 'saaae_cifar64_patch_anchor', 'vae_cifar64',
                 'vae_cifar64_constant_noise', 'resnet_vae_speckle', 'resnet_vae_mnist',
                 'resnet_vae_fashion_mnist')


def shrunk(name: str):
  config = runpy.run_path(str(REPO / 'configs' / f'{name}.py'))['get_config']()
  if config.data.source.startswith('npz:../'):
    config.data.source = 'npz:' + str(REPO / config.data.source[len('npz:'):])
  config.data.image_size = 16
  config.data.speckle_num_train = config.data.speckle_num_eval = 8
  config.model.encoder_features = (4,) * len(config.model.encoder_features)
  config.model.decoder_features = (4,) * len(config.model.decoder_features)
  config.model.latent_dim = 6
  config.model.anchor_embed_dim = 8
  config.train.batch_size = config.train.eval_batch_size = 4
  config.train.num_train_steps = 1
  config.train.xla_optimization = 'minimal'
  return config


@pytest.mark.parametrize('name', S1_S2_CONFIGS)
def test_the_config_trains_a_step_and_evaluates_when_shrunk(name):
  config = shrunk(name)
  with contextlib.ExitStack() as stack:
    if config.data.source.startswith('tfds:'):
      import tensorflow_datasets as tfds  # STL-10 cannot be downloaded here: TFDS's mock data.
      stack.enter_context(tfds.testing.mock_data(num_examples=8))
    experiment = trainer.create_experiment(config)
    state = experiment.init_state(jax.random.key(0))
    batch = parallel.global_batch(
        experiment.train_source.read_batch(np.arange(config.train.batch_size)), experiment.mesh)
    assert batch['image'].shape == (4, 16, 16, 1 if name.startswith('resnet') else 3)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = experiment.train_step(state, batch, jax.random.key(1))
    assert bool(metrics['finite']) and float(metrics['kl']) > 0
    moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), before, state.params)
    assert all(jax.tree.leaves(moved)), 'a parameter did not get an update'
    held_out = trainer.evaluate(experiment, state, jax.random.key(2), max_batches=1)
  assert held_out['count'] == 4 and np.isfinite(held_out['loss'])
  if config.task == 'denoise':  # S1's masked input is scored too: the baseline to beat
    assert held_out['input_sse'] > 0
