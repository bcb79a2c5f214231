"""S2, the ResNet conv VAE on speckle: its layout, and the beta sweep with collapse detection."""

import csv
import logging
import runpy

import flax
import jax
import jax.numpy as jnp
import pytest
from conftest import REPO

from jvae import metric_writer, steps, sweep, trainer
from jvae.config import ConfigError, validate_config
from jvae.models import build_model


def _module(name):
  return runpy.run_path(str(REPO / 'configs' / f'{name}.py'))


def test_the_s2_layout():
  config = _module('resnet_vae_speckle')['get_config']()
  validate_config(config)
  model = build_model(config.model, (64, 64, 1))
  rngs = {'params': jax.random.key(0), 'latent': jax.random.key(1)}
  outputs, params = jax.eval_shape(lambda: model.init_with_output(rngs, jnp.zeros((2, 64, 64, 1))))
  shapes = {'/'.join(k): v.shape
            for k, v in flax.traverse_util.flatten_dict(params['params']).items()}
  assert [shapes[f'encoder/Conv_{i}/kernel'] for i in range(4)] == [
      (3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 128), (3, 3, 128, 256)]
  assert all(f'encoder/ResNetBlock_{i}/Conv_1/kernel' in shapes for i in range(4))
  assert shapes['mu/kernel'] == shapes['logvar/kernel'] == (4 * 4 * 256, 512)
  assert [shapes[f'decoder/ConvTranspose_{i}/kernel'] for i in range(4)] == [
      (3, 3, 256, 128), (3, 3, 128, 64), (3, 3, 64, 32), (3, 3, 32, 1)]
  assert outputs['reconstruction'].shape == (2, 64, 64, 1) and outputs['z'].shape == (2, 512)
  assert config.model.activation == 'silu' and config.model.output_activation == 'sigmoid'
  assert config.loss.reconstruction == 'mse'
  assert config.train.learning_rate == 1e-4 and 0 < config.train.grad_clip_norm <= 10


@pytest.mark.parametrize('name', ['resnet_vae_speckle_beta_sweep',
                                  'resnet_vae_fashion_mnist_beta_sweep'])
def test_the_sweep_config_adds_one_point_per_beta(name):
  module = _module(name)
  # At least six values from 0.1 to 8, as S2 asks.
  assert len([b for b in module['BETAS'] if 0.1 <= b <= 8]) >= 6
  assert min(module['BETAS']) <= 0.1 and max(module['BETAS']) >= 8
  points = sweep.sweep_points(module['sweep'])
  assert [p['loss.beta'] for p in points] == list(module['BETAS'])
  config = sweep.apply_overrides(module['get_config'](), points[0])
  assert config.loss.beta == module['BETAS'][0]
  assert sweep.point_name(points[0]) == f'loss.beta={module["BETAS"][0]}'
  with pytest.raises(ConfigError, match='loss.betta'):
    sweep.apply_overrides(config, {'loss.betta': 1.0})


def test_a_sweep_trains_each_point_and_tabulates_rate_distortion(tmp_path, config):
  config.loss.reconstruction = 'mse'

  def beta_sweep(add):
    for beta in (0.01, 30.0):
      add(**{'loss.beta': beta})

  rows = sweep.sweep_and_report(config, beta_sweep, str(tmp_path))
  assert [r['point'] for r in rows] == ['loss.beta=0.01', 'loss.beta=30.0']
  assert (tmp_path / 'loss.beta=30.0' / 'eval' / 'test' / 'metrics.json').exists()
  low, high = rows
  assert high['kl'] < low['kl']  # a larger beta buys a lower rate
  with open(tmp_path / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  assert {'loss.beta', 'kl', 'reconstruction', 'active_units', 'collapsed_dims'} <= set(table[0])
  assert 0 <= int(table[1]['collapsed_dims']) <= config.model.latent_dim
  assert (tmp_path / 'rate_distortion.png').stat().st_size > 1000
  assert '| loss.beta |' in (tmp_path / 'sweep.md').read_text()

  # Re-running resumes: finished points are read back, never trained or evaluated again.
  def must_not_train(point_config, point_dir):
    raise AssertionError(f'retrained finished point {point_dir}')

  again = sweep.sweep_and_report(config, beta_sweep, str(tmp_path), train_fn=must_not_train)
  assert again == rows
  # A point with a larger budget than its finished run is not finished: it goes to training.
  budget = config.train.num_train_steps + 1
  bigger = sweep.apply_overrides(config, {'loss.beta': 0.01, 'train.num_train_steps': budget})
  assert sweep.finished_metrics(bigger, str(tmp_path / 'loss.beta=0.01')) is None


def test_active_units_count_the_dimensions_whose_posterior_mean_varies():
  mu = jnp.stack([jnp.linspace(-1, 1, 8), jnp.full(8, 3.0), 0.01 * jnp.linspace(-1, 1, 8)], -1)
  # Variances 0.41, 0 and 4e-5: only the first is above Burda et al.'s 0.01.
  assert int(steps.active_units(mu, 0.01)) == 1
  assert int(steps.active_units(mu, 1e-6)) == 2


def test_collapse_is_warned_in_the_training_log_at_the_step_it_happens(tmp_path, config, caplog):
  config.loss.reconstruction = 'mse'
  # beta ramps from 0: the latent is used first, then the KL wins and the posterior means stop
  # depending on x.
  config.loss.beta, config.loss.beta_schedule, config.loss.beta_warmup_steps = 1000.0, 'linear', 6
  config.train.learning_rate = 1e-2
  config.train.collapse_warning_fraction = 0.5
  # The tiny model's posterior means vary little in absolute terms; a lower bar for "active"
  # makes its first steps count as active.
  config.train.active_unit_threshold = 1e-4
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(config, str(tmp_path))
  active = {r['step']: r['active_units'] for r in metric_writer.read_metrics(str(tmp_path))
            if r['split'] == 'train'}
  threshold = 0.5 * config.model.latent_dim
  # A warning at each fall below the threshold after the latent was at or above it.
  falls, was_active = [], False
  for step in sorted(active):
    if active[step] >= threshold:
      was_active = True
    elif was_active:
      falls.append(step)
      was_active = False
  assert falls, active  # the run did collapse, so there is something to report
  warned = [int(m.split('at step ')[1].split(':')[0]) for m in caplog.messages
            if m.startswith('posterior collapse') and 'training batch' in m]
  assert warned == falls, (warned, active)
  assert any(m.startswith('posterior collapse') and 'eval split' in m for m in caplog.messages)
