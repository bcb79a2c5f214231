"""jvae.models.blocks.Dropout: inverted dropout whose keep probability and expectation are those
of the configured rate, with one mask per key shared by the forward and backward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.models import blocks


def _apply(rate, x, key=0, deterministic=False):
  return blocks.Dropout(rate, deterministic=deterministic).apply(
      {}, x, rngs={'dropout': jax.random.key(key)})


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.9])
def test_keep_fraction_and_expectation_match_the_rate(rate):
  x = jnp.ones((101, 103, 7))  # odd: the last 32-bit draw is half used
  y = np.asarray(_apply(rate, x))
  n = x.size
  kept = y != 0
  # Binomial: within 5 standard deviations of 1 - rate.
  assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  # Kept elements are scaled by the inverse of the realised keep probability (exact to 2**-17).
  np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-4)
  assert abs(y.mean() - 1) < 5 * np.sqrt(rate / (1 - rate) / n)


def test_masks_are_per_key_and_neighbouring_elements_are_independent():
  x = jnp.ones((512, 512))
  a, b = np.asarray(_apply(0.5, x, 0)) != 0, np.asarray(_apply(0.5, x, 1)) != 0
  np.testing.assert_array_equal(a, np.asarray(_apply(0.5, x, 0)) != 0)
  assert 0.45 < (a == b).mean() < 0.55
  # Elements 2i and 2i+1 share one 32-bit draw: their keep decisions must not be correlated.
  flat = a.reshape(-1, 2).astype(float)
  assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 0.01


def test_gradient_is_the_forward_mask_times_the_scale():
  x = jax.random.normal(jax.random.key(3), (64, 33))
  y, vjp = jax.vjp(lambda x: _apply(0.3, x), x)
  (dx,) = vjp(jnp.ones_like(y))
  np.testing.assert_allclose(dx, np.where(np.asarray(y) != 0, np.asarray(y) / np.asarray(x), 0),
                             rtol=1e-5)


def test_deterministic_zero_and_full_rates():
  x = jax.random.normal(jax.random.key(4), (5, 6))
  np.testing.assert_array_equal(_apply(0.5, x, deterministic=True), x)
  np.testing.assert_array_equal(_apply(0.0, x), x)
  np.testing.assert_array_equal(_apply(1.0, x), jnp.zeros_like(x))
