"""CompiledStep: the AOT executable (caches cleared after its compile or not) computes what
jax.jit does, and training with train.shed_compiler_memory is the same run as without it."""

import jax
import numpy as np
import pytest

from jvae import compiled_step, metric_writer, parallel, trainer


@pytest.fixture(scope='module')
def experiment():
  from conftest import tiny_config
  return trainer.create_experiment(tiny_config())


def _batch(experiment, rows):
  return parallel.global_batch(experiment.train_source.read_batch(np.arange(rows)),
                               experiment.mesh)


def _copy(tree):
  return jax.tree.map(lambda x: x.copy(), tree)


def _assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.mark.parametrize('shed', [False, True])
def test_the_compiled_step_computes_what_the_jitted_step_does(experiment, shed, monkeypatch):
  sheds = []
  monkeypatch.setattr(jax, 'clear_caches', lambda: sheds.append(1))
  state = experiment.init_state(jax.random.key(0))
  batch, key = _batch(experiment, experiment.config.train.batch_size), jax.random.key(1)
  step = compiled_step.CompiledStep(experiment.train_step, 'train_step', shed)
  jitted_state, compiled_state = _copy(state), _copy(state)
  for _ in range(3):
    given = compiled_state
    jitted_state, jitted_metrics = experiment.train_step(jitted_state, batch, key)
    compiled_state, compiled_metrics = step(compiled_state, batch, key)
    _assert_equal((jitted_state, jitted_metrics), (compiled_state, compiled_metrics))
    # The state is donated as by the jitted step: its buffers are reused, not copied.
    assert jax.tree.leaves(given)[0].is_deleted()
  assert len(sheds) == (1 if shed else 0)  # once, after the compile


def test_the_kept_executable_runs_after_the_caches_are_cleared(experiment):
  state = experiment.init_state(jax.random.key(0))
  batch, key = _batch(experiment, experiment.config.train.batch_size), jax.random.key(1)
  expected = experiment.train_step.lower(state, batch, key).compile()(_copy(state), batch, key)
  step = compiled_step.CompiledStep(experiment.train_step, 'train_step', True)
  step(_copy(state), batch, key)
  compiled = step._compiled
  jax.clear_caches()  # as another step's shedding, or a user, would
  _assert_equal(expected, step(_copy(state), batch, key))
  assert step._compiled is compiled  # the same executable, not a recompile


def test_other_arguments_than_the_compiled_ones_go_through_jit(experiment):
  state = experiment.init_state(jax.random.key(0))
  key = jax.random.key(1)
  step = compiled_step.CompiledStep(experiment.train_step, 'train_step', True)
  step(_copy(state), _batch(experiment, 16), key)
  smaller = _batch(experiment, 8)  # another shape: the executable refuses it before running
  _assert_equal(step(_copy(state), smaller, key),
                experiment.train_step(_copy(state), smaller, key))


def test_shedding_compiler_memory_does_not_change_a_training_run(tmp_path, config):
  config.train.eval_every_steps = 6  # an evaluation mid-run, after which the caches are cleared
  runs = {}
  for shed in (False, True):
    config.train.shed_compiler_memory = shed
    metrics = trainer.train_and_evaluate(config, str(tmp_path / str(shed)))
    records = metric_writer.read_metrics(str(tmp_path / str(shed)))
    runs[shed] = ([(r['step'], r['split'], r['loss']) for r in records], metrics['loss'])
  assert runs[True] == runs[False] and len(runs[True][0]) == 12 + 2
