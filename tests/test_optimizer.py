"""jvae.train_state's optimizer: its global-norm clipping is optax's, and the weight-norm metrics
are there when asked for and equal what they name."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from jvae import parallel, train_state, trainer


def _gradients(scale: float) -> dict:
  keys = jax.random.split(jax.random.key(0), 3)
  shapes = {'a': (7, 5), 'b': (5,), 'c': (3, 2, 4)}
  return {name: scale * jax.random.normal(key, shape)
          for key, (name, shape) in zip(keys, shapes.items(), strict=True)}


@pytest.mark.parametrize('scale', [1e-3, 1.0, 50.0])
def test_clip_by_global_norm_equals_optax(scale):
  max_norm = 2.0
  grads = _gradients(scale)
  ours = train_state.clip_by_global_norm(max_norm)
  theirs = optax.clip_by_global_norm(max_norm)
  got, _ = ours.update(grads, ours.init(grads))
  want, _ = theirs.update(grads, theirs.init(grads))
  clipped = float(optax.tree.norm(grads)) > max_norm
  for name in grads:
    if clipped:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    else:  # below the threshold the gradients pass through untouched
      np.testing.assert_array_equal(got[name], grads[name])
      np.testing.assert_array_equal(want[name], grads[name])
  if clipped:
    np.testing.assert_allclose(float(optax.tree.norm(got)), max_norm, rtol=1e-6)
  # A state of the same structure as optax's: checkpoints of either restore into the other.
  assert (jax.tree.structure(ours.init(grads)) == jax.tree.structure(theirs.init(grads)))


def test_adam_with_our_clipping_updates_like_optax_chain():
  config = tiny_config().train
  config.grad_clip_norm = 1.0
  params = _gradients(1.0)
  ours = train_state.make_optimizer(config)
  theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
  ours_state, theirs_state = ours.init(params), theirs.init(params)
  for step in range(3):
    grads = _gradients(10.0 ** step)
    got, ours_state = ours.update(grads, ours_state, params)
    want, theirs_state = theirs.update(grads, theirs_state, params)
    for name in params:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-9)


def test_weight_norm_metrics_are_logged_only_when_asked_and_equal_the_norms():
  config = tiny_config()
  config.train.log_weight_norms = True
  experiment = trainer.create_experiment(config, parallel.make_mesh(jax.devices()[:1]))
  state = experiment.init_state(jax.random.key(0))
  source = experiment.train_source
  batch = experiment.global_batch(source.read_batch(np.arange(config.train.batch_size)))
  before = jax.tree.map(np.asarray, state.params)
  new_state, metrics = experiment.train_step(state, batch, jax.random.key(1))
  after = jax.tree.map(np.asarray, new_state.params)
  np.testing.assert_allclose(metrics['param_norm'], optax.tree.norm(after), rtol=1e-5)
  delta = jax.tree.map(lambda a, b: a - b, after, before)
  np.testing.assert_allclose(metrics['update_norm'], optax.tree.norm(delta), rtol=1e-3)
  assert jnp.isfinite(metrics['grad_norm'])

  config.train.log_weight_norms = False
  plain = trainer.create_experiment(config, parallel.make_mesh(jax.devices()[:1]))
  _, plain_metrics = plain.train_step(plain.init_state(jax.random.key(0)), batch,
                                      jax.random.key(1))
  assert 'param_norm' not in plain_metrics and 'update_norm' not in plain_metrics
  np.testing.assert_allclose(plain_metrics['loss'], metrics['loss'], rtol=1e-6)
