"""The core math: closed-form KL, the masked reparameterization, likelihoods and the objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae import distributions, losses, schedules
from jvae.config import base_config


def test_closed_form_kl_matches_monte_carlo():
  mu = jnp.array([[0.5, -1.0, 2.0]])
  logvar = jnp.array([[-0.5, 0.3, -2.0]])
  z = distributions.reparameterize(jax.random.key(0), jnp.repeat(mu, 200_000, 0),
                                   jnp.repeat(logvar, 200_000, 0))
  log_q = distributions.gaussian_log_density(z, mu, logvar)
  log_p = distributions.gaussian_log_density(z, jnp.zeros_like(mu), jnp.zeros_like(logvar))
  monte_carlo = float(jnp.mean(log_q - log_p))
  closed = float(distributions.gaussian_kl(mu, logvar)[0])
  assert closed == pytest.approx(monte_carlo, rel=0.01)
  np.testing.assert_allclose(distributions.gaussian_kl_per_dim(mu, logvar).sum(-1),
                             distributions.gaussian_kl(mu, logvar))


def test_kl_is_zero_only_at_the_prior():
  assert float(distributions.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0
  assert float(distributions.gaussian_kl(jnp.full((1, 4), 0.1), jnp.zeros((1, 4)))[0]) > 0


def test_gradients_flow_through_the_reparameterization():
  key = jax.random.key(1)

  def f(mu, logvar):
    return jnp.sum(distributions.reparameterize(key, mu, logvar) ** 2)

  g_mu, g_logvar = jax.grad(f, argnums=(0, 1))(jnp.ones((2, 3)), jnp.zeros((2, 3)))
  assert np.all(np.asarray(g_mu) != 0) and np.all(np.asarray(g_logvar) != 0)


def test_noise_mask_zero_gives_mu_and_one_gives_the_usual_sample():
  key = jax.random.key(2)
  mu, logvar = jnp.arange(6.0).reshape(2, 3), jnp.full((2, 3), 0.4)
  np.testing.assert_array_equal(
      distributions.reparameterize(key, mu, logvar, jnp.zeros((2, 3))), mu)
  np.testing.assert_array_equal(distributions.reparameterize(key, mu, logvar, jnp.ones((2, 3))),
                                distributions.reparameterize(key, mu, logvar))
  half = distributions.reparameterize(key, mu, logvar, jnp.full((2, 3), 0.5))
  np.testing.assert_allclose(half - mu, 0.5 * (distributions.reparameterize(key, mu, logvar)
                                               - mu), rtol=1e-6)


def _outputs(key, batch=4, shape=(5, 5, 1), latent=3):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  logits = jax.random.normal(k1, (batch, *shape))
  return {'logits': logits, 'reconstruction': jax.nn.sigmoid(logits),
          'mu': jax.random.normal(k2, (batch, latent)),
          'logvar': 0.1 * jax.random.normal(k3, (batch, latent))}, jax.random.uniform(
              k4, (batch, *shape))


def test_reduction_is_sum_over_pixels_mean_over_batch():
  outputs, target = _outputs(jax.random.key(3))
  config = base_config().loss
  config.reconstruction = 'mse'
  _, metrics = losses.objective(outputs, target, jnp.float32(0.0), config)
  expected = np.mean(np.sum((np.asarray(outputs['reconstruction']) - np.asarray(target)) ** 2,
                            axis=(1, 2, 3)))
  assert float(metrics['reconstruction']) == pytest.approx(expected, rel=1e-5)


def test_bernoulli_matches_binary_cross_entropy_on_probabilities():
  outputs, target = _outputs(jax.random.key(4))
  p = np.asarray(outputs['reconstruction'], np.float64)
  t = np.asarray(target, np.float64)
  expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=(1, 2, 3))
  got = losses.reconstruction_nll('bernoulli', outputs['logits'], outputs['reconstruction'],
                                  target)
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_gaussian_nll_is_a_normalised_density():
  outputs, target = _outputs(jax.random.key(5), batch=1, shape=(1, 1, 1))
  sigma = 0.3
  got = float(losses.reconstruction_nll('gaussian', outputs['logits'], outputs['reconstruction'],
                                        target, sigma)[0])
  x, m = float(target.ravel()[0]), float(outputs['reconstruction'].ravel()[0])
  expected = -np.log(np.exp(-0.5 * ((x - m) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)))
  assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('kind', ['bernoulli', 'mse', 'l1', 'gaussian'])
def test_beta_zero_loss_equals_the_reconstruction_term(kind):
  outputs, target = _outputs(jax.random.key(6))
  config = base_config().loss
  config.reconstruction = kind
  loss, metrics = losses.objective(outputs, target, jnp.float32(0.0), config)
  assert float(loss) == pytest.approx(float(metrics['reconstruction']))
  assert float(metrics['kl']) > 0  # The raw KL is still logged.
  loss2, metrics2 = losses.objective(outputs, target, jnp.float32(2.0), config)
  assert float(loss2) == pytest.approx(float(metrics2['reconstruction'] + 2 * metrics2['kl']),
                                       rel=1e-6)
  assert float(metrics2['beta_kl']) == pytest.approx(2 * float(metrics2['kl']), rel=1e-6)


def test_free_bits_floor_each_dimension_but_log_the_raw_kl():
  outputs, target = _outputs(jax.random.key(7))
  outputs['mu'] = jnp.zeros_like(outputs['mu'])
  outputs['logvar'] = jnp.zeros_like(outputs['logvar'])  # KL exactly 0 in every dimension.
  config = base_config().loss
  config.free_bits = 0.5
  loss, metrics = losses.objective(outputs, target, jnp.float32(1.0), config)
  assert float(metrics['kl']) == 0.0
  assert float(loss) == pytest.approx(float(metrics['reconstruction']) + 3 * 0.5, rel=1e-6)


def test_beta_schedules():
  config = base_config().loss
  config.beta = 2.0
  config.beta_schedule = 'linear'
  config.beta_warmup_steps = 10
  linear = schedules.beta_schedule(config, 100)
  assert [float(linear(s)) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
  config.beta_schedule = 'cyclical'
  config.beta_cycles = 2
  config.beta_cycle_ramp_fraction = 0.5
  cyclical = schedules.beta_schedule(config, 100)
  assert [float(cyclical(s)) for s in (0, 25, 40, 50, 75)] == [0.0, 2.0, 2.0, 0.0, 2.0]
  config.beta_schedule = 'constant'
  assert float(schedules.beta_schedule(config, 100)(37)) == 2.0
