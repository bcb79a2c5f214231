"""Tests for jvae.corruptions: determinism by key, range and dtype, identities, and each kind's
defining property, on tiny batches.

Compiling dominates the run time on CPU, so every corruption runs through one cached `jax.jit`
per (kind, static arguments), most tests share the batch shape of `_images()`, and inputs and
checks are numpy (each eager jnp op would compile a program of its own).
"""

from __future__ import annotations

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae import config as config_lib
from jvae import corruptions

UNIT = (0.0, 1.0)
SYMMETRIC = (-1.0, 1.0)
RANDOM_KINDS = ('gaussian_noise', 'salt_and_pepper', 'random_patches', 'fading', 'scratches')
# Kinds whose strength may be traced: their compiled program serves every strength.
TRACEABLE = ('none', 'gaussian_noise', 'salt_and_pepper', 'fading', 'jpeg_blocks')


@functools.cache
def _jitted(kind: str, strength: float | None, value_range: tuple[float, float]):
  if strength is None:
    return jax.jit(lambda k, x, s: corruptions.corrupt(kind, k, x, s, value_range))
  return jax.jit(lambda k, x: corruptions.corrupt(kind, k, x, strength, value_range))


def run(kind: str, images: np.ndarray, strength: float, value_range=UNIT,
        seed: int = 0) -> np.ndarray:
  key = jax.random.key(seed)
  if kind in TRACEABLE:
    return np.asarray(_jitted(kind, None, value_range)(key, images, strength))
  return np.asarray(_jitted(kind, strength, value_range)(key, images))


def _images(shape=(4, 12, 12, 3), seed=0) -> np.ndarray:
  """Uniform [0, 1) float32 images whose first two are identical, to tell per-image draws apart."""
  x = np.random.default_rng(seed).uniform(size=shape).astype(np.float32)
  x[1] = x[0]
  return x


def _full(value: float, shape=(4, 12, 12, 3)) -> np.ndarray:
  return np.full(shape, value, np.float32)


@pytest.mark.parametrize('kind', sorted(corruptions.CORRUPTIONS))
def test_jit_shape_dtype_range_and_keys(kind):
  images = _images()
  out = run(kind, images, 0.5)
  assert out.shape == images.shape
  assert out.dtype == images.dtype
  assert out.min() >= 0.0 and out.max() <= 1.0
  if kind in RANDOM_KINDS:
    np.testing.assert_array_equal(run(kind, images, 0.5), out)  # same key, same output
    assert not np.array_equal(run(kind, images, 0.5, seed=1), out)
    assert not np.array_equal(out[0], out[1])  # identical inputs, their own draws
  elif kind != 'none':
    assert not np.array_equal(out, images)


@pytest.mark.parametrize('kind', sorted(corruptions.CORRUPTIONS))
def test_strength_zero_is_identity(kind):
  images = _images()
  if kind in ('gaussian_noise', 'salt_and_pepper', 'fading'):
    out = run(kind, images, 0.0)  # traced: the identity comes out of the arithmetic
  else:  # these return early on a concrete 0, with nothing to compile
    out = np.asarray(corruptions.corrupt(kind, jax.random.key(0), images, 0.0, UNIT))
  np.testing.assert_array_equal(out, images)


def test_symmetric_range():
  images = _images() * 2 - 1
  out = run('salt_and_pepper', images, 0.5, SYMMETRIC)
  assert set(np.unique(out[out != images])) == {-1.0, 1.0}
  out = run('random_patches', np.ones_like(images), 0.5, SYMMETRIC)
  assert set(np.unique(out)) == {0.0, 1.0}  # S1's fill: 0, the middle of [-1, 1]
  out = run('jpeg_blocks', images, 1e-5, SYMMETRIC)
  np.testing.assert_allclose(out, images, atol=2e-4)


def test_bfloat16_is_kept():
  images = _images().astype(jnp.bfloat16)
  out = run('pixelate', images, 0.5)
  assert out.dtype == jnp.bfloat16


def test_unknown_kind_names_the_allowed_ones():
  with pytest.raises(ValueError, match='gaussian_noise'):
    corruptions.corrupt('smudge', jax.random.key(0), _images(), 0.5, UNIT)


def test_registry_extends_config_choices():
  kinds = config_lib.EXTRA_CHOICES['corruption.kind']
  assert kinds[0] == 'none'
  assert len(kinds) == len(set(kinds))
  assert set(corruptions.CORRUPTIONS) <= set(kinds)
  cfg = config_lib.base_config()
  cfg.task = 'denoise'
  cfg.corruption.kind = 'jpeg_blocks'
  config_lib.validate_config(cfg)


def test_gaussian_noise_std_is_strength_times_range_width():
  out = run('gaussian_noise', _full(0.5), 0.05)
  assert abs(out.std() - 0.05) < 0.005  # 1728 draws: std known to about 2%


def test_salt_and_pepper_sets_whole_pixels_to_the_ends():
  out = run('salt_and_pepper', _full(0.5), 0.3)
  changed = np.any(out != 0.5, axis=-1)
  assert set(np.unique(out[changed])) <= {0.0, 1.0}
  assert np.all(out[changed] == out[changed][:, :1])  # all channels of a hit pixel agree
  assert 0.2 < changed.mean() < 0.4
  assert 0.3 < (out[changed][:, 0] == 1.0).mean() < 0.7  # salt and pepper about equally often
  out = run('salt_and_pepper', _full(0.5), 2.0)  # strengths above 1 act as 1
  assert np.all(out != 0.5) and 0.4 < (out == 1.0).mean() < 0.6


def test_mask_patches_area_and_fill():
  images = _full(1.0)
  fn = jax.jit(corruptions.mask_patches, static_argnums=(2, 3, 4, 5))
  masked, mask = map(np.asarray, fn(jax.random.key(0), images, 1, 5, 0.0, True))
  assert mask.shape == (4, 12, 12, 1)
  np.testing.assert_array_equal(mask.sum(axis=(1, 2, 3)), 25.0)  # one patch: exactly its area
  np.testing.assert_array_equal(masked, 1.0 - np.broadcast_to(mask, masked.shape))
  _, mask = fn(jax.random.key(1), images, 6, 3, 0.0, True)
  area = np.asarray(mask).sum(axis=(1, 2, 3))
  assert np.all(area >= 9) and np.all(area <= 6 * 9)


def test_mask_patches_per_image_flag():
  images = _full(1.0)
  fn = jax.jit(corruptions.mask_patches, static_argnums=(2, 3, 4, 5))
  shared = np.asarray(fn(jax.random.key(0), images, 6, 3, 0.0, False)[1])
  for i in range(1, 4):
    np.testing.assert_array_equal(shared[0], shared[i])
  own = np.asarray(fn(jax.random.key(0), images, 6, 3, 0.0, True)[1])
  assert any(not np.array_equal(own[0], own[i]) for i in range(1, 4))


def test_mask_patches_rejects_too_large_patches():
  with pytest.raises(ValueError, match='patch_size 9'):
    corruptions.mask_patches(jax.random.key(0), _full(1.0, (1, 8, 12, 1)), 2, 9)


def test_random_patches_fill_and_area():
  # 12x12 at strength 0.5: side round(0.5 * 12 / 4) = 2, sixteen patches, filled with 0.
  out = run('random_patches', _full(1.0), 0.5)
  area = (out[..., 0] == 0.0).sum(axis=(1, 2))
  assert np.all(area >= 4) and np.all(area <= 16 * 4)
  assert set(np.unique(out)) == {0.0, 1.0}


def test_downsample_blur_erases_a_checkerboard_and_keeps_ramps():
  # At strength 0.5 (scale 0.5, S4's 28 -> 14 -> 28) each small pixel is a 2x2 block mean: a
  # one-pixel checkerboard becomes its mean everywhere.
  checker = (np.indices((12, 12)).sum(0) % 2).astype(np.float32)
  checker = np.broadcast_to(checker[None, ..., None], (4, 12, 12, 3))
  np.testing.assert_allclose(run('downsample_blur', checker, 0.5), 0.5, atol=1e-6)
  # Bilinear resizing reproduces linear functions, so a ramp survives away from the borders.
  ramp = np.arange(12, dtype=np.float32) / 12
  ramp = np.broadcast_to(ramp[None, None, :, None], (4, 12, 12, 3))
  out = run('downsample_blur', ramp, 0.5)
  np.testing.assert_allclose(out[:, :, 2:-2], ramp[:, :, 2:-2], atol=1e-6)


def test_gaussian_blur_keeps_constants_and_spreads_impulses():
  # Mirrored borders: a constant image stays constant right up to the edges.
  np.testing.assert_allclose(run('gaussian_blur', _full(0.3), 1.0), 0.3, atol=1e-6)
  # sigma = 1.0 * 12 / 16 = 0.75 px: an interior impulse spreads into a symmetric bump that
  # keeps its mass.
  impulse = np.zeros((4, 12, 12, 3), np.float32)
  impulse[:, 6, 6, :] = 1.0
  out = run('gaussian_blur', impulse, 1.0)
  np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, atol=1e-5)
  assert 0.1 < out[0, 6, 6, 0] < 0.5
  np.testing.assert_allclose(out[:, 5, 6], out[:, 7, 6], atol=1e-6)
  np.testing.assert_allclose(out[:, 6, 5], out[:, 5, 6], atol=1e-6)


def test_gaussian_blur_equals_dm_pix_on_the_mirrored_image():
  # Strength 8: sigma 6 px, a kernel wider than the 12 px image, so the mirrored borders fold
  # more than once.
  images = _images()
  strength = 8.0
  sigma = strength * 12 / 16
  r = corruptions.blur_radius(sigma)
  pad = ((0, 0), (r, r), (r, r), (0, 0))
  reference = jax.jit(lambda x: pix.gaussian_blur(jnp.pad(x, pad, mode='symmetric'), sigma,
                                                  2 * r + 1, padding='VALID'))
  np.testing.assert_allclose(run('gaussian_blur', images, strength), reference(images),
                             atol=2e-6)


def test_jpeg_blocks_near_identity_at_tiny_strength():
  # 12 is not a multiple of 8: this exercises the padding. Quantisation error per pixel is at
  # most about 8 * (max step / 2) = 8 * 0.5 * 99 * 5 * 1e-5 / 255 ~ 8e-6.
  images = _images()
  np.testing.assert_allclose(run('jpeg_blocks', images, 1e-5), images, atol=1e-4)
  np.testing.assert_allclose(run('jpeg_blocks', images, 0.0), images, atol=1e-5)  # traced 0


def test_jpeg_blocks_flattens_blocks_at_high_strength():
  # A level per 8x8 block plus small texture: strength 2 zeroes every AC coefficient
  # (|AC| <= 8 * 0.02 * 255 < half the smallest step, 50) but keeps distinct DC levels.
  rng = np.random.default_rng(0)
  levels = rng.uniform(0.1, 0.9, (4, 2, 2, 3))
  blocky = np.repeat(np.repeat(levels, 8, axis=1), 8, axis=2)
  images = (blocky + 0.02 * rng.uniform(size=blocky.shape)).astype(np.float32)
  out = run('jpeg_blocks', images, 2.0)
  blocks = out.reshape(4, 2, 8, 2, 8, 3)
  assert np.max(np.ptp(blocks, axis=(2, 4))) < 1e-4
  assert np.ptp(blocks.mean(axis=(2, 4))) > 0.1


def test_fading_lowers_contrast():
  images = _images()
  out = run('fading', images, 0.5)
  assert np.all(np.std(out, axis=(1, 2, 3)) < 0.7 * np.std(images, axis=(1, 2, 3)))


def test_pixelate_is_constant_over_blocks_and_keeps_block_means():
  images = _images()
  out = run('pixelate', images, 0.5)
  # Block side 1 + round(0.5 * 12 / 8) = 2.
  blocks = out.reshape(4, 6, 2, 6, 2, 3)
  assert np.max(np.ptp(blocks, axis=(2, 4))) == 0.0
  means = images.reshape(4, 6, 2, 6, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(blocks[:, :, 0, :, 0], means, atol=1e-6)


def test_pixelate_ragged_border_averages_only_real_pixels():
  # Block side 1 + round(2.5 * 12 / 8) = 5 does not divide 12: the zero padding of the last
  # blocks must not leak into their means.
  out = run('pixelate', _full(0.4), 2.5)
  np.testing.assert_allclose(out, 0.4, atol=1e-6)


def test_scratches_draw_thin_extreme_lines():
  out = run('scratches', _full(0.5), 0.5)
  changed = np.abs(out[..., 0] - 0.5) > 0.2
  frac = changed.mean(axis=(1, 2))
  # Three segments about one pixel wide cover some, but far from all, of a 12x12 image.
  assert np.all(frac > 0) and np.all(frac < 0.6)
  # Line cores reach the bright or dark end; the soft edges blend toward the background.
  extreme = (out >= 0.85) | (out <= 0.15)
  assert np.all(extreme.any(axis=(1, 2, 3)))
  assert np.all(out == out[..., :1])  # the same value in every channel


def test_random_corruption_mixes_kinds_per_image():
  images = _images()
  kinds = ('none', 'pixelate')
  fn = jax.jit(lambda k: corruptions.random_corruption(k, images, kinds, 0.5, UNIT))
  out = np.asarray(fn(jax.random.key(2)))
  pixelated = run('pixelate', images, 0.5)
  is_clean = [np.array_equal(out[i], images[i]) for i in range(4)]
  for i in range(4):
    assert is_clean[i] or np.allclose(out[i], pixelated[i], atol=1e-6)
  assert set(is_clean) == {True, False}  # key 2 picks both kinds in this batch
  with pytest.raises(ValueError, match='allowed'):
    corruptions.random_corruption(jax.random.key(0), images, ('bogus',), 1.0, UNIT)


def test_traced_strength_is_refused_where_it_sets_shapes():
  images = _images()
  fn = jax.jit(lambda s: corruptions.pixelate(jax.random.key(0), images, s, UNIT))
  with pytest.raises(TypeError, match='concrete'):
    fn(0.5)
