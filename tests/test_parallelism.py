"""The train step's parallelism (jit or shard_map), gradient accumulation and bfloat16 compute.

The 8-device checks run in a subprocess (XLA's fake CPU devices must be set before JAX starts)
that calls `eight_device_checks` of this module.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, tiny_config

from jvae import parallel, trainer
from jvae.config import ConfigError, validate_config

ALLCLOSE = dict(rtol=2e-4, atol=2e-5)  # Adam turns rounding in near-zero gradients into this.


def deterministic_config(norm: str = 'none'):
  """The tiny conv model as an AE without dropout or corruption: no random draw anywhere, so
  different device counts and micro-batchings must give the same update."""
  config = tiny_config()
  config.model.kind = 'ae'
  config.model.norm = norm
  config.loss.reconstruction = 'mse'
  return config


def host_batch(source, start: int, size: int) -> dict:
  return source.read_batch(np.arange(start, start + size))


def experiment_on(config, devices=None) -> trainer.Experiment:
  return trainer.create_experiment(config, parallel.make_mesh(devices or jax.devices()[:1]))


def run_steps(experiment: trainer.Experiment, batches: list[dict]):
  """(params, batch_stats, per-step metrics) after one train step per batch from a fixed init."""
  state = experiment.init_state(jax.random.key(0))
  history = []
  for batch in batches:
    state, metrics = experiment.train_step(
        state, parallel.global_batch(batch, experiment.mesh), jax.random.key(1))
    history.append(jax.device_get(metrics))
  return jax.device_get(state.params), jax.device_get(state.batch_stats), history


def assert_trees_close(a, b, **tolerance) -> None:
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **(tolerance or ALLCLOSE)), a, b)


def assert_same_training(reference, other) -> None:
  """Same parameters, and per step the same loss and gradient norm. The gradient norm matters:
  Adam's update barely changes when every gradient is scaled, so parameters alone would not
  catch summed instead of averaged gradients."""
  assert_trees_close(reference[0], other[0])
  for ref, got in zip(reference[2], other[2], strict=True):
    np.testing.assert_allclose(got['loss'], ref['loss'], rtol=1e-5)
    np.testing.assert_allclose(got['grad_norm'], ref['grad_norm'], rtol=1e-4)


def first(batch_stats: dict) -> dict:
  """The running statistics of the first BatchNorm, right after the first conv of the images."""
  return batch_stats['encoder']['NormActDrop_0']['BatchNorm_0']


def eight_device_checks() -> None:
  assert jax.device_count() == 8, jax.devices()
  one, eight = jax.devices()[:1], jax.devices()

  # A host batch lands row-sharded over the 8 devices, as a copy of the host arrays.
  mesh = parallel.make_mesh(eight)
  host = {'image': np.arange(32 * 4, dtype=np.uint8).reshape(32, 2, 2, 1),
          'label': np.arange(32, dtype=np.int32)}
  placed = parallel.global_batch(host, mesh)
  for name, array in placed.items():
    assert array.sharding == parallel.data_sharded(mesh), array.sharding
    assert {shard.device for shard in array.addressable_shards} == set(eight)
    for shard in array.addressable_shards:
      np.testing.assert_array_equal(shard.data, host[name][shard.index])
  host['label'][:] = -1
  np.testing.assert_array_equal(np.asarray(placed['label']), np.arange(32))
  # Arrays already committed to one device are resharded too.
  moved = parallel.global_batch({'label': jax.device_put(np.arange(32), eight[3])}, mesh)
  assert moved['label'].sharding == parallel.data_sharded(mesh)
  np.testing.assert_array_equal(np.asarray(moved['label']), np.arange(32))

  # Without BatchNorm, shard_map on 8 devices (with and without accumulation), and jit with
  # accumulation, are the plain jit step on one device.
  config = deterministic_config()
  config.train.batch_size = 32
  experiment = experiment_on(config, one)
  batches = [host_batch(experiment.train_source, 32 * i, 32) for i in range(3)]
  reference = run_steps(experiment, batches)
  for parallelism, accumulation in (('shard_map', 1), ('shard_map', 2), ('jit', 2)):
    config.train.parallelism = parallelism
    config.train.grad_accumulation_steps = accumulation
    assert_same_training(reference, run_steps(experiment_on(config, eight), batches))

  # With BatchNorm, each device normalises by its own 4 rows: one shard_map step on 8 devices has
  # the mean loss and mean running statistics of 8 one-device steps on the shards alone.
  config = deterministic_config(norm='batch')
  config.train.batch_size = 32
  batch = batches[0]
  _, global_stats, global_history = run_steps(experiment_on(config, one), [batch])
  config.train.parallelism = 'shard_map'
  _, device_stats, device_history = run_steps(experiment_on(config, eight), [batch])
  config.train.parallelism = 'jit'
  config.train.batch_size = 4
  experiment = experiment_on(config, one)
  shards = [run_steps(experiment, [jax.tree.map(lambda x, d=d: x[4 * d:4 * d + 4], batch)])
            for d in range(8)]
  np.testing.assert_allclose(device_history[0]['loss'],
                             np.mean([s[2][0]['loss'] for s in shards]), rtol=1e-5)
  assert_trees_close(device_stats, jax.tree.map(lambda *s: np.mean(s, axis=0),
                                                *[s[1] for s in shards]), rtol=1e-5, atol=1e-6)
  # Against the global batch, at the first BatchNorm (its input, the first conv of the images, is
  # the same for both; later ones see differently normalised features). Running statistics start
  # at mean 0, var 1 and take (1 - m) of a batch's, m = 0.9: so a shard's running mean is
  # (1 - m) mu_d, and by the law of total variance the global running variance exceeds the
  # per-device one by (1 - m) Var_d(mu_d) = Var_d(running mean_d) / (1 - m).
  shard_means = np.stack([first(s[1])['mean'] for s in shards])
  np.testing.assert_allclose(first(device_stats)['mean'], first(global_stats)['mean'],
                             rtol=1e-4, atol=1e-6)
  gap = first(global_stats)['var'] - first(device_stats)['var']
  # The running variances near 0.9 carry float32 rounding of about 1e-7.
  np.testing.assert_allclose(gap, np.var(shard_means, axis=0) / 0.1, rtol=1e-2, atol=3e-7)
  assert gap.max() > 1e-5, gap
  assert abs(device_history[0]['loss'] - global_history[0]['loss']) > 1e-3 * abs(
      global_history[0]['loss'])
  print('OK')


def test_shard_map_on_eight_devices_matches_jit_and_keeps_per_device_batch_norm():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'PYTHONPATH': f'{REPO}{os.pathsep}{REPO / "tests"}', 'JAX_PLATFORMS': 'cpu'}
  script = 'import test_parallelism; test_parallelism.eight_device_checks()'
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr


def test_four_accumulated_micro_batches_equal_one_full_batch_update():
  config = deterministic_config()
  experiment = experiment_on(config)
  batches = [host_batch(experiment.train_source, 16 * i, 16) for i in range(3)]
  reference = run_steps(experiment, batches)
  config.train.grad_accumulation_steps = 4
  assert_same_training(reference, run_steps(experiment_on(config), batches))


def test_bfloat16_compute_trains_and_keeps_float32_parameters_and_statistics():
  config = tiny_config()
  config.model.dtype = 'bfloat16'
  config.model.norm = 'batch'
  config.train.learning_rate = 3e-3
  experiment = experiment_on(config)
  batch = host_batch(experiment.train_source, 0, config.train.batch_size)
  params, batch_stats, history = run_steps(experiment, [batch] * 20)
  losses = [float(m['loss']) for m in history]
  assert all(bool(m['finite']) for m in history)
  assert np.mean(losses[-3:]) < 0.9 * losses[0], losses
  # The traced forward pass multiplies in bfloat16 (XLA:CPU may keep excess precision, so the
  # values alone would not show it): every convolution (on CPU 'fast' runs them as matmuls, so
  # lax convolutions or dot_generals) and all Dense layers but the two small latent heads (mu,
  # logvar), which stay float32 for the KL ...
  images = jnp.zeros((2, *experiment.image_shape))
  variables = {'params': params, 'batch_stats': batch_stats}
  jaxpr = jax.make_jaxpr(lambda v: experiment.model.apply(v, images, None, train=False,
                                                          sample=False))(variables)
  operand_dtypes = [equation.invars[0].aval.dtype for equation in jaxpr.jaxpr.eqns
                    if equation.primitive.name in ('conv_general_dilated', 'dot_general')]
  conv_layers = sum(x.ndim == 4 for x in jax.tree.leaves(params))
  assert conv_layers >= 2
  assert operand_dtypes.count(jnp.float32) == 2, operand_dtypes
  assert operand_dtypes.count(jnp.bfloat16) == len(operand_dtypes) - 2, operand_dtypes
  assert operand_dtypes.count(jnp.bfloat16) >= conv_layers + 1, operand_dtypes
  # ... the state does not.
  state_dtypes = {x.dtype for x in jax.tree.leaves((params, batch_stats))}
  assert state_dtypes == {np.dtype('float32')}, state_dtypes


@pytest.mark.parametrize('field, value, pattern', [
    ('grad_accumulation_steps', 3, r"'train.batch_size' is 16.*grad_accumulation_steps=3.*"
                                   r'multiple of 6'),
    ('grad_accumulation_steps', 0, r"'train.grad_accumulation_steps' is 0; allowed range"),
    ('parallelism', 'pmap', r"'train.parallelism' is 'pmap'; allowed: 'jit', 'shard_map'"),
])
def test_bad_parallelism_fields_are_named(field, value, pattern):
  config = tiny_config()
  config.train[field] = value
  with pytest.raises(ConfigError, match=pattern):
    validate_config(config, num_devices=2)
