"""Latent interpolation and traversal helpers."""

import jax.numpy as jnp
import numpy as np

from jvae import explore


def test_slerp_endpoints_norms_and_great_circle():
  a, b = jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 1.0])
  path = explore.slerp(a, b, jnp.linspace(0, 1, 5))
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(path, axis=1), [3.0, 2.5, 2.0, 1.5, 1.0], rtol=1e-6)
  directions = path / jnp.linalg.norm(path, axis=1, keepdims=True)
  angles = jnp.arccos(jnp.clip(directions @ directions[0], -1, 1))
  np.testing.assert_allclose(angles, jnp.linspace(0, jnp.pi / 2, 5), atol=1e-5)


def test_slerp_of_parallel_codes_is_linear():
  a = jnp.array([1.0, 2.0])
  np.testing.assert_allclose(explore.slerp(a, 2 * a, jnp.array([0.5]))[0], 1.5 * a, rtol=1e-6)


def test_lerp_and_traversals():
  a, b = jnp.zeros(3), jnp.ones(3)
  np.testing.assert_allclose(explore.lerp(a, b, jnp.array([0.25]))[0], 0.25 * b)
  grid = explore.traversal_latents(jnp.zeros(4), [2, 0], jnp.array([-1.0, 1.0]))
  np.testing.assert_array_equal(grid, [[0, 0, -1, 0], [0, 0, 1, 0], [-1, 0, 0, 0], [1, 0, 0, 0]])
  assert list(explore.most_informative_dimensions([0.1, 3.0, 0.0, 1.0], 2)) == [1, 3]
