"""The IWAE bound, bits per dimension and binarization."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae import likelihood, losses, steps
from jvae.config import base_config
from jvae.models import build_model
from jvae.trainer import MINIMAL_XLA_OPTIMIZATION


@pytest.fixture(scope='module')
def setup():
  config = base_config()
  config.model.encoder = config.model.decoder = 'mlp'
  config.model.hidden_dims = (16,)
  config.model.latent_dim = 3
  model = build_model(config.model, (4, 4, 1))
  x = jax.random.uniform(jax.random.key(0), (6, 4, 4, 1))
  target = steps.binarize(x, jax.random.key(1))
  variables = model.init({'params': jax.random.key(2), 'latent': jax.random.key(3)}, x)
  return config, model, variables, x, target


def _iwae(setup, k, chunk, key):
  config, model, variables, x, target = setup
  fn = jax.jit(lambda key: likelihood.iwae_log_likelihood(
      model, variables, x, target, None, key, k, chunk, config.loss),
      compiler_options=MINIMAL_XLA_OPTIMIZATION)
  return np.asarray(fn(key))


def test_iwae_with_one_sample_is_the_elbo_in_expectation(setup):
  config, model, variables, x, target = setup
  mu, logvar, _ = model.apply(variables, x, method='encode')
  # 4000 one-sample bounds, averaged ...
  one_sample_bounds = jax.jit(lambda: likelihood.log_importance_weights(
      model, variables, mu, logvar, target, None, jax.random.key(6), 4000, config.loss),
      compiler_options=MINIMAL_XLA_OPTIMIZATION)()
  # ... against the ELBO with the closed-form KL and its own Monte Carlo reconstruction term.
  def terms(key):
    outputs = model.apply(variables, x, rngs={'latent': key})
    return losses.per_example_terms(outputs, target, config.loss)

  all_terms = jax.jit(jax.vmap(terms), compiler_options=MINIMAL_XLA_OPTIMIZATION)(
      jax.random.split(jax.random.key(7), 4000))
  reconstruction, kl = all_terms['reconstruction'], all_terms['kl'][0]
  elbo = -np.mean(np.asarray(reconstruction), axis=0) - np.asarray(kl)
  np.testing.assert_allclose(np.mean(np.asarray(one_sample_bounds), axis=0), elbo, rtol=0.01)
  assert _iwae(setup, 1, 1, jax.random.key(7)).shape == (6,)


def test_more_samples_never_loosen_the_bound_on_average(setup):
  key = jax.random.key(11)
  k1 = _iwae(setup, 10, 10, key).mean()
  k100 = _iwae(setup, 100, 10, key).mean()
  assert k100 >= k1 - 1e-4


def test_chunking_does_not_change_the_estimate(setup):
  config, model, variables, x, target = setup
  a = _iwae(setup, 40, 10, jax.random.key(3))
  mu, logvar, _ = model.apply(variables, x, method='encode')
  weights = jax.jit(lambda c: likelihood.log_importance_weights(
      model, variables, mu, logvar, target, None, jax.random.fold_in(jax.random.key(3), c), 10,
      config.loss), compiler_options=MINIMAL_XLA_OPTIMIZATION)
  log_w = np.concatenate([np.asarray(weights(c)) for c in range(4)])
  expected = jax.nn.logsumexp(log_w, axis=0) - math.log(40)
  np.testing.assert_allclose(a, expected, rtol=1e-5)


def test_bits_per_dim():
  assert likelihood.bits_per_dim(784 * math.log(2), 784, 'bernoulli', (0, 1)) == pytest.approx(1)
  assert likelihood.bits_per_dim(0.0, 10, 'gaussian', (0, 1)) == pytest.approx(8.0)
  assert likelihood.bits_per_dim(0.0, 10, 'gaussian', (-1, 1)) == pytest.approx(7.0)


def test_fixed_binarization_depends_on_the_example_not_the_batch():
  images = jnp.full((4, 3, 3, 1), 0.5)
  key = jax.random.key(0)
  whole = steps.binarize(images, key, jnp.arange(4))
  part = steps.binarize(images[2:], key, jnp.arange(2, 4))
  np.testing.assert_array_equal(whole[2:], part)
  assert set(np.unique(np.asarray(whole))) <= {0.0, 1.0}
  fresh = [steps.binarize(images, jax.random.key(i)) for i in range(2)]
  assert not np.array_equal(fresh[0], fresh[1])
