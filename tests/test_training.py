"""End-to-end properties of the trainer: learning, data parallelism, resumption, failures."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO

from jvae import checkpointing, metric_writer, parallel, trainer


def _train_losses(workdir):
  return {r['step']: r['loss'] for r in metric_writer.read_metrics(str(workdir))
          if r['split'] == 'train'}


def _restore_params(workdir, config):
  experiment = trainer.create_experiment(config)
  run = checkpointing.RunCheckpoints(str(workdir), 3, 'loss', 'min')
  state, _, _, _ = run.restore(experiment.abstract_state())
  run.close()
  return state.params


def test_a_model_overfits_a_32_image_batch(config):
  config.loss.reconstruction = 'mse'
  config.model.kind = 'ae'
  config.train.batch_size = 32
  config.train.learning_rate = 3e-3
  experiment = trainer.create_experiment(config)
  state = experiment.init_state(jax.random.key(0))
  batch = parallel.global_batch(experiment.train_source.read_batch(np.arange(32)),
                                experiment.mesh)
  key = jax.random.key(1)
  first = None
  for _ in range(300):
    state, metrics = experiment.train_step(state, batch, key)
    first = float(metrics['loss']) if first is None else first
  assert float(metrics['loss']) < 0.15 * first, (first, float(metrics['loss']))


def test_training_writes_metrics_figures_and_checkpoints(tmp_path, config):
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  for name in ('reconstructions.png', 'samples.png', 'curves.png'):
    assert (tmp_path / 'figures' / name).stat().st_size > 1000
  final = json.loads((tmp_path / 'eval' / 'test' / 'metrics.json').read_text())
  held_out = len(trainer.create_experiment(config).eval_source)
  assert final['step'] == 12 and final['metrics']['count'] == held_out  # each digit exactly once
  assert metrics['kl'] > 0 and len(metrics['kl_per_dim']) == 4
  assert np.isclose(metrics['elbo'], -(metrics['reconstruction'] + metrics['kl']))
  assert sorted(_train_losses(tmp_path)) == list(range(1, 13))
  assert ocp.CheckpointManager(str(tmp_path / 'checkpoints')).all_steps() == [4, 8, 12]
  assert ocp.CheckpointManager(str(tmp_path / 'best')).all_steps() == [12]


def test_a_stopped_run_resumes_bit_for_bit(tmp_path, config):
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.train.num_train_steps = 8
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.train.num_train_steps = 12
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  straight, resumed = _train_losses(tmp_path / 'straight'), _train_losses(tmp_path / 'resumed')
  assert straight == resumed and len(straight) == 12
  jax.tree.map(np.testing.assert_array_equal, _restore_params(tmp_path / 'straight', config),
               _restore_params(tmp_path / 'resumed', config))


def test_a_run_resumes_under_its_prng_and_refuses_another(tmp_path, config):
  # philox2x32's keys have threefry2x32's shape: a restore that ignored the impl would silently
  # continue on another stream.
  config.train.prng_impl = 'philox2x32'
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.train.num_train_steps = 8
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.train.num_train_steps = 12
  config.train.prng_impl = 'threefry2x32'
  with pytest.raises(ValueError, match=r"train.prng_impl is 'threefry2x32'.*'philox2x32'"):
    trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.train.prng_impl = 'philox2x32'
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert _train_losses(tmp_path / 'straight') == _train_losses(tmp_path / 'resumed')
  straight = checkpointing.RunCheckpoints(str(tmp_path / 'straight'), 3, 'loss', 'min')
  _, key, _, _ = straight.restore(trainer.create_experiment(config).abstract_state())
  straight.close()
  assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl='philox2x32'))


def _train_cli(workdir, *overrides):
  command = [sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs/test.py'),
             '--workdir', str(workdir), *overrides]
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(workdir, steps, process, timeout=600):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if len(_train_losses(workdir)) >= steps:
      return
    if process.poll() is not None:
      raise AssertionError(f'training exited early:\n{process.stdout.read()}')
    time.sleep(0.05)
  raise AssertionError('training did not reach the step in time')


def test_sigkill_then_restart_matches_an_uninterrupted_run(tmp_path, config):
  steps = 30
  overrides = [f'--config.train.num_train_steps={steps}', '--config.train.checkpoint_every_steps=2']
  process = _train_cli(tmp_path / 'killed', *overrides)
  _wait_for_steps(tmp_path / 'killed', random.Random().randint(5, 20), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  restart = _train_cli(tmp_path / 'killed', *overrides)
  output, _ = restart.communicate(timeout=900)
  assert restart.returncode == 0, output
  config.train.num_train_steps = steps
  config.train.checkpoint_every_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert _train_losses(tmp_path / 'killed') == _train_losses(tmp_path / 'straight')
  jax.tree.map(np.testing.assert_array_equal, _restore_params(tmp_path / 'straight', config),
               _restore_params(tmp_path / 'killed', config))


def test_sigterm_saves_a_checkpoint_and_loses_no_step(tmp_path):
  process = _train_cli(tmp_path, '--config.train.num_train_steps=100000',
                       '--config.train.checkpoint_every_steps=100000')
  _wait_for_steps(tmp_path, 3, process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 128 + signal.SIGTERM, output
  saved = ocp.CheckpointManager(str(tmp_path / 'checkpoints')).latest_step()
  assert saved == max(_train_losses(tmp_path)), output


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, config):
  config.train.learning_rate = 1e30  # Parameters overflow within a few steps.
  config.train.checkpoint_every_steps = 1
  config.train.num_train_steps = 50
  with pytest.raises(trainer.NonFiniteError, match=r'step \d+: non-finite'):
    trainer.train_and_evaluate(config, str(tmp_path / 'stop'))
  params = _restore_params(tmp_path / 'stop', config)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  config.train.nan_policy = 'skip'
  config.train.checkpoint_every_steps = 1000
  trainer.train_and_evaluate(config, str(tmp_path / 'skip'))
  params = _restore_params(tmp_path / 'skip', config)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path, config):
  os.makedirs(tmp_path, exist_ok=True)
  with trainer.workdir_lock(str(tmp_path)):
    with pytest.raises(trainer.WorkdirInUseError, match='in use by another training run'):
      trainer.train_and_evaluate(config, str(tmp_path))


def test_a_checkpoint_that_does_not_fit_the_config_names_the_parameter(tmp_path, config):
  config.train.num_train_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path))
  config.model.latent_dim = 5
  expected = r'params/decoder/Dense_0/kernel has shape \(4, 64\) in the checkpoint but \(5, 64\)'
  with pytest.raises(checkpointing.CheckpointError, match=expected):
    trainer.train_and_evaluate(config, str(tmp_path))


EIGHT_DEVICES_SCRIPT = textwrap.dedent('''
    import sys
    import jax, numpy as np
    sys.path.insert(0, 'tests')
    from conftest import tiny_config
    from jvae import parallel, trainer
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    config.model.norm = 'batch'  # BatchNorm statistics must be global over the sharded batch.
    config.train.batch_size = 32
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      experiment = trainer.create_experiment(config, parallel.make_mesh(devices))
      state = experiment.init_state(jax.random.key(0))
      source = experiment.train_source
      for step in range(4):
        batch = source.read_batch(np.arange(step * 32, (step + 1) * 32))
        state, metrics = experiment.train_step(
            state, parallel.global_batch(batch, experiment.mesh), jax.random.key(1))
      results.append((jax.device_get(state.params), jax.device_get(state.batch_stats),
                      float(metrics['loss'])))
    (p1, s1, l1), (p8, s8, l8) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), p1, p8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), s1, s8)
    assert abs(l1 - l8) <= 1e-4 * abs(l1), (l1, l8)
    print('OK', l1, l8)
''')


def test_eight_devices_equal_one_device():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', EIGHT_DEVICES_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr


def test_evaluate_reloads_the_run_and_is_deterministic(tmp_path, config):
  from jvae import evaluate
  final = trainer.train_and_evaluate(config, str(tmp_path))
  first = evaluate.evaluate_run(str(tmp_path), checkpoint='latest')
  for name in ('reconstructions', 'samples', 'interpolation', 'traversals', 'temperatures',
               'latent_scatter'):
    assert (tmp_path / 'eval' / 'test' / 'figures' / f'{name}.png').stat().st_size > 1000
  again = evaluate.evaluate_run(str(tmp_path), checkpoint='latest', figures=False)
  assert first['metrics'] == again['metrics']
  assert first['step'] == 12
  # The trainer's final eval saw the same parameters and data with another noise stream: the
  # scores that draw no noise (KL, posterior-mean image scores) agree.
  for name in ('kl', 'ssim', 'psnr', 'mse'):
    assert first['metrics'][name] == pytest.approx(final[name], rel=1e-5), name
  train_split = evaluate.evaluate_run(str(tmp_path), split='train', checkpoint='latest',
                                      figures=False)
  assert train_split['metrics']['count'] > first['metrics']['count']


def test_a_second_stage_starts_from_the_first_stage_parameters_exactly(tmp_path, config):
  config.train.num_train_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path / 'stage1'))
  stage1 = _restore_params(tmp_path / 'stage1', config)
  config.train.init_from = str(tmp_path / 'stage1')
  config.train.init_from_checkpoint = 'latest'
  config.train.stage = 'stage2'
  experiment = trainer.create_experiment(config)
  fresh = experiment.init_state(jax.random.key(0))
  started = trainer._initialize_from(fresh, experiment, config)
  jax.tree.map(np.testing.assert_array_equal, started.params, stage1)
  assert int(started.step) == 0
  trainer.train_and_evaluate(config, str(tmp_path / 'stage2'))
  info = json.loads((tmp_path / 'stage2' / 'run_info.json').read_text())
  assert info['stage'] == 'stage2' and info['init_from'].endswith('stage1')


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path, config):
  config.train.learning_rate = 0.0  # Nothing improves after the first eval.
  config.train.eval_every_steps = 2
  config.train.early_stopping_patience = 2
  config.train.num_train_steps = 40
  config.loss.beta = 0.0
  config.model.kind = 'ae'  # Deterministic eval: equal losses, so no eval counts as better.
  trainer.train_and_evaluate(config, str(tmp_path))
  steps = sorted(_train_losses(tmp_path))
  assert steps[-1] == 6, steps  # evals at 2, 4, 6; the last two did not beat step 2.


def test_two_processes_train_like_one(tmp_path, config):
  import portpicker
  port = portpicker.pick_unused_port()
  common = ['--config.train.num_train_steps=6', '--config.train.checkpoint_every_steps=3',
            '--config.distributed.enabled=True',
            f'--config.distributed.coordinator_address=127.0.0.1:{port}',
            '--config.distributed.num_processes=2']
  processes = [_train_cli(tmp_path / 'two', *common, f'--config.distributed.process_id={p}')
               for p in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], '\n'.join(outputs)
  config.train.num_train_steps = 6
  config.train.checkpoint_every_steps = 3
  trainer.train_and_evaluate(config, str(tmp_path / 'one'))
  two, one = _train_losses(tmp_path / 'two'), _train_losses(tmp_path / 'one')
  assert sorted(two) == sorted(one) == list(range(1, 7))
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)],
                             rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               _restore_params(tmp_path / 'two', config),
               _restore_params(tmp_path / 'one', config))


def test_compilation_cache_dir_stores_the_compiled_steps(tmp_path, config):
  cache = tmp_path / 'xla_cache'
  config.train.compilation_cache_dir = str(cache)
  config.train.num_train_steps = 2
  min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
  # The tiny config compiles in under JAX's default 1 s threshold for caching.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_seconds)
    trainer.use_compilation_cache('')
  cached = {path.name.split('-')[0] for path in cache.iterdir()}
  assert {'jit_train_step', 'jit_eval_step', 'jit_init'} <= cached, cached


@pytest.mark.parametrize('every, releases_in_loop', [(0, 1), (2, 4)])
def test_the_trainer_returns_freed_memory_on_its_schedule(tmp_path, config, monkeypatch, every,
                                                         releases_in_loop):
  from jvae import host_memory
  calls = []
  monkeypatch.setattr(host_memory, 'release_freed_memory', lambda: calls.append(1) or True)
  config.train.num_train_steps = 6
  config.train.release_memory_every_steps = every
  trainer.train_and_evaluate(config, str(tmp_path / f'every_{every}'))
  # After the first step, then after steps 2, 4 and 6; the final evaluation adds one more.
  assert len(calls) == releases_in_loop + 1


def test_an_eval_step_that_raises_leaves_no_prefetch_thread_behind(config):
  import dataclasses
  import threading

  def running_threads():
    return {t.ident for t in threading.enumerate() if t.is_alive()}

  config.train.eval_batch_size = 8  # many more batches than the prefetch buffer holds
  experiment = trainer.create_experiment(config)
  state = experiment.init_state(jax.random.key(0))
  before = running_threads()
  started = []

  def failing_eval_step(state, batch, key):
    started.append(running_threads() - before)
    if len(started) == 2:
      raise RuntimeError('eval step failed')
    return experiment.eval_step(state, batch, key)

  failing = dataclasses.replace(experiment, eval_step=failing_eval_step)
  # The traceback stays referenced, as a notebook keeps its last one, which keeps the
  # iterator alive: only closing it stops the thread.
  with pytest.raises(RuntimeError, match='eval step failed') as raised:
    trainer.evaluate(failing, state, jax.random.key(1))
  assert raised.traceback and started[1], 'expected the eval pass to run a prefetch thread'
  deadline = time.monotonic() + 10
  while running_threads() & started[1]:
    assert time.monotonic() < deadline, 'the eval prefetch thread is still running'
    time.sleep(0.05)
