"""Pure, keyed image corruptions for denoising, masked recovery and restoration tasks.

Every registered corruption has the signature

  fn(key, images, strength, value_range) -> corrupted

- `key`: a JAX PRNG key (typed `jax.random.key` or raw). It is the only source of randomness; each
  image gets its own draws (batched arrays drawn from the key), so a batch is not corrupted the
  same way throughout; `random_patches_per_batch` alone shares one mask over the batch (SAAAE).
- `images`: float [B, H, W, C], values in `value_range`.
- `strength`: a Python float >= 0. 0 means "no corruption" for every kind; larger is stronger. Some
  kinds derive array shapes (patch, kernel, block sizes) from it, so it must be a concrete number,
  not a traced value: under `jax.jit` close over it or mark it static.
- `value_range`: `(low, high)` Python floats, e.g. (0, 1) or (-1, 1).

The result has the shape and dtype of `images` and is clipped to `value_range`. Arithmetic is
done in float32 whatever the input dtype.

The registry `CORRUPTIONS` maps `corruption.kind` config values to these functions; importing this
module adds its names to `jvae.config.EXTRA_CHOICES['corruption.kind']`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jvae import config as config_lib

CorruptionFn = Callable[[jax.Array, jax.Array, float, tuple[float, float]], jax.Array]

# ITU-T T.81 (JPEG) Annex K.1 luminance quantisation table, for 8-bit samples; libjpeg quality 50.
_JPEG_LUMINANCE_QUANT = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=np.float32)
# strength -> multiplier of the table. 0.2 gives the table itself (about libjpeg quality 50) and
# 1.0 five times it (about quality 10, where blocks are plainly visible).
_JPEG_SCALE_PER_STRENGTH = 5.0
_JPEG_BLOCK = 8

# S1 (SAAAE) masks 16 patches of 8x8 on 64x64 images; at strength 0.5 the registry reproduces it.
_NUM_MASK_PATCHES = 16


# Random draws are made flat and reshaped: on XLA:CPU with jax 0.10.2 (partitionable threefry) a
# flat draw compiles 4-5x faster than the same draw in a rank-4 shape (measured 0.7 s vs 2.9 s for
# a [4, 12, 12, 3] uniform, 1.3 s vs 5.1 s for a normal), with the same distribution.
def _uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return jax.random.uniform(key, (math.prod(shape),), jnp.float32).reshape(shape)


def _normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
  low, high = (float(v) for v in value_range)
  if not high > low:
    raise ValueError(f'value_range must be (low, high) with high > low; got {value_range!r}')
  return low, high


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f'images must be [B, H, W, C]; got shape {images.shape}')


def _finish(out: jax.Array, images: jax.Array, value_range: tuple[float, float]) -> jax.Array:
  low, high = value_range
  return jnp.clip(out, low, high).astype(images.dtype)


def _static_strength(strength: float, kind: str) -> float:
  try:
    value = float(strength)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise TypeError(f'{kind}: strength sets array shapes here, so it must be a concrete Python '
                    'number (close over it or mark it static under jax.jit)') from e
  if value < 0:
    raise ValueError(f'{kind}: strength must be >= 0; got {value}')
  return value


def _is_concrete_zero(strength: float | jax.Array) -> bool:
  """True for a concrete strength of 0 (an early identity return); False when traced."""
  try:
    return float(strength) == 0
  except (TypeError, jax.errors.ConcretizationTypeError):
    return False


def none(key: jax.Array, images: jax.Array, strength: float,
         value_range: tuple[float, float]) -> jax.Array:
  """The identity: returns `images` [B, H, W, C] unchanged (key and strength unused)."""
  del key, strength, value_range
  return images


def gaussian_noise(key: jax.Array, images: jax.Array, strength: float,
                   value_range: tuple[float, float]) -> jax.Array:
  """Adds i.i.d. Gaussian noise with std `strength * (high - low)`, then clips.

  On [0, 1] images this is S5's `x + noise_factor * randn`, with `strength` = `noise_factor`.
  `strength` may be traced.

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    strength: noise std as a fraction of the range width, >= 0.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  _check_images(images)
  low, high = _check_range(value_range)
  x = images.astype(jnp.float32)
  noise = _normal(key, x.shape)
  return _finish(x + strength * (high - low) * noise, images, (low, high))


def salt_and_pepper(key: jax.Array, images: jax.Array, strength: float,
                    value_range: tuple[float, float]) -> jax.Array:
  """Sets each pixel (all its channels) to `low` or `high`, with equal odds, w.p. `strength`.

  So a fraction `strength` of the pixels is replaced, in expectation (not exactly). Whole pixels,
  not single channels, are hit so that colour images get black and white dots as in the classic
  salt-and-pepper model. `strength` may be traced; values above 1 act as 1.

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    strength: probability in [0, 1] that a pixel is replaced.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  _check_images(images)
  low, high = _check_range(value_range)
  b, h, w, _ = images.shape
  # One uniform draw decides both: u < strength is a hit, and the lower half of that interval is
  # salt, so salt and pepper are equally likely.
  p = jnp.minimum(strength, 1.0)
  u = _uniform(key, (b, h, w, 1))
  x = images.astype(jnp.float32)
  out = jnp.where(u < p, jnp.where(u < 0.5 * p, high, low), x)
  return _finish(out, images, (low, high))


def mask_patches(key: jax.Array, images: jax.Array, num_patches: int, patch_size: int,
                 fill_value: float = 0.0, per_image: bool = True) -> tuple[jax.Array, jax.Array]:
  """Sets `num_patches` square patches of side `patch_size` to `fill_value`.

  Patch corners are uniform over the positions where the whole patch fits inside the image;
  patches may overlap, so the masked area is between one patch and `num_patches` patches.

  Args:
    key: PRNG key.
    images: float [B, H, W, C].
    num_patches: patches per image, >= 0.
    patch_size: patch side in pixels, 1 <= patch_size <= min(H, W).
    fill_value: the value written into masked pixels (not clipped to any range).
    per_image: True draws positions for each image; False draws one set of positions used for the
      whole batch, as the SAAAE source did.

  Returns:
    (masked, mask): masked [B, H, W, C] in the dtype of `images`; mask [B, H, W, 1] in the same
    dtype, 1 where a pixel was masked and 0 elsewhere.

  Raises:
    ValueError: if the patch does not fit in the image or the counts are negative.
  """
  _check_images(images)
  b, h, w, _ = images.shape
  if patch_size < 1 or patch_size > h or patch_size > w:
    raise ValueError(f'mask_patches: patch_size {patch_size} must be between 1 and the image '
                     f'size {h}x{w}; use a smaller patch or larger images')
  if num_patches < 0:
    raise ValueError(f'mask_patches: num_patches must be >= 0; got {num_patches}')
  rows = 1 if not per_image else b
  # Corners from one uniform draw (floor of u * count) rather than jax.random.randint, which
  # compiles to a much larger program for the same uniform integers.
  counts = jnp.array([h - patch_size + 1, w - patch_size + 1], jnp.float32)[:, None, None]
  u = _uniform(key, (2, rows, num_patches))
  corners = jnp.minimum(jnp.floor(u * counts), counts - 1).astype(jnp.int32)
  ys, xs = corners[0], corners[1]
  # Build the mask from interval tests rather than scatter-updates: it vectorises over patches
  # and is cheap at these sizes ([B, N, H, W] booleans).
  r = jnp.arange(h)
  c = jnp.arange(w)
  in_rows = (r >= ys[..., None]) & (r < ys[..., None] + patch_size)  # [rows, N, H]
  in_cols = (c >= xs[..., None]) & (c < xs[..., None] + patch_size)  # [rows, N, W]
  mask = jnp.any(in_rows[..., :, None] & in_cols[..., None, :], axis=1)  # [rows, H, W]
  mask = jnp.broadcast_to(mask, (b, h, w))[..., None]
  masked = jnp.where(mask, jnp.asarray(fill_value, images.dtype), images)
  return masked, mask.astype(images.dtype)


def random_patches(key: jax.Array, images: jax.Array, strength: float,
                   value_range: tuple[float, float]) -> jax.Array:
  """Masks 16 random square patches per image (S1's masking task).

  Patch side = round(strength * min(H, W) / 4), at least 1 and at most min(H, W), so strength 0.5
  on 64x64 images gives S1's sixteen 8x8 patches; strength 0 masks nothing. The fill value is the
  source's literal 0 clipped into the range: mid-grey on [-1, 1] (as in S1), black on [0, 1].

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    strength: patch side as a fraction of a quarter of the image side, >= 0 (concrete).
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  return _random_patches(key, images, strength, value_range, per_image=True)


def random_patches_per_batch(key: jax.Array, images: jax.Array, strength: float,
                             value_range: tuple[float, float]) -> jax.Array:
  """`random_patches` with one set of patch positions for the whole batch, as SAAAE's source.

  Args and returns as `random_patches`.
  """
  return _random_patches(key, images, strength, value_range, per_image=False)


def _random_patches(key: jax.Array, images: jax.Array, strength: float,
                    value_range: tuple[float, float], per_image: bool) -> jax.Array:
  _check_images(images)
  low, high = _check_range(value_range)
  strength = _static_strength(strength, 'random_patches')
  if strength == 0:
    return images
  side = min(images.shape[1], images.shape[2])
  patch_size = min(side, max(1, round(strength * side / 4)))
  fill = min(max(0.0, low), high)
  masked, _ = mask_patches(key, images, _NUM_MASK_PATCHES, patch_size, fill, per_image=per_image)
  return _finish(masked, images, (low, high))


def resize_blur(images: jax.Array, scale: float) -> jax.Array:
  """Bilinear resize to `scale` times the size and back: S4's 28 -> 14 -> 28 is scale 0.5.

  Without antialiasing, matching `tf.image.resize`'s default that the source used: at scale 0.5
  each small pixel is the mean of a 2x2 block.

  Args:
    images: float [B, H, W, C].
    scale: in (0, 1]; the small size is max(1, round(scale * side)) for each side.

  Returns:
    [B, H, W, C] float32.
  """
  _check_images(images)
  b, h, w, c = images.shape
  small = (b, max(1, round(scale * h)), max(1, round(scale * w)), c)
  x = images.astype(jnp.float32)
  x = jax.image.resize(x, small, method='bilinear', antialias=False)
  return jax.image.resize(x, (b, h, w, c), method='bilinear', antialias=False)


def downsample_blur(key: jax.Array, images: jax.Array, strength: float,
                    value_range: tuple[float, float]) -> jax.Array:
  """Resolution loss: `resize_blur` with scale = 1 - strength (deterministic; key unused).

  The scale falls as strength rises so that, like every other kind, 0 is the identity and larger
  is stronger; strength 0.5 is S4's 28 -> 14 -> 28. Strengths >= 1 shrink to 1x1 (a flat image).

  Args:
    key: unused (the corruption is deterministic).
    images: float [B, H, W, C] in `value_range`.
    strength: in [0, 1] (concrete).
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  del key
  _check_images(images)
  low, high = _check_range(value_range)
  strength = _static_strength(strength, 'downsample_blur')
  if strength == 0:
    return images
  scale = max(0.0, 1.0 - strength)
  return _finish(resize_blur(images, scale), images, (low, high))


def blur_radius(sigma: float) -> int:
  """Half-width in pixels of the Gaussian kernel `gaussian_blur` uses: ceil(3 sigma), at least 1."""
  return max(1, math.ceil(3 * sigma))


def _blur_matrix(n: int, sigma: float, radius: int) -> np.ndarray:
  """[n, n] matrix applying a 1-D Gaussian along an axis of length n, borders mirrored.

  Row i holds the 2 * radius + 1 normalised taps of `pix.gaussian_blur`, folded back into the
  image the way `jnp.pad(..., mode='symmetric')` would extend it.
  """
  offsets = np.arange(-radius, radius + 1)
  taps = np.exp(-offsets.astype(np.float64)**2 / (2 * sigma**2))
  taps /= taps.sum()
  source = np.pad(np.arange(n), radius, mode='symmetric')  # padded position -> image index
  m = np.zeros((n, n), np.float64)
  for i in range(n):
    np.add.at(m[i], source[i + radius + offsets], taps)
  return m.astype(np.float32)


def gaussian_blur(key: jax.Array, images: jax.Array, strength: float,
                  value_range: tuple[float, float]) -> jax.Array:
  """Gaussian blur with sigma = strength * min(H, W) / 16 pixels (deterministic; key unused).

  Scaling sigma with the image side makes a strength look alike at every resolution: strength 0.5
  is sigma 4 px at 128x128 and about 0.9 px at 28x28. The kernel spans +-`blur_radius(sigma)`.
  Borders are mirrored (symmetric padding), so edges are not darkened by zero padding and a
  constant image stays constant. The result equals `pix.gaussian_blur` with padding='VALID' on the
  mirrored image (tested), but is computed differently; see the comment in the body.

  Args:
    key: unused.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0 (concrete); 0 is the identity.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  del key
  _check_images(images)
  low, high = _check_range(value_range)
  strength = _static_strength(strength, 'gaussian_blur')
  if strength == 0:
    return images
  _, h, w, _ = images.shape
  sigma = strength * min(h, w) / 16
  radius = blur_radius(sigma)
  # Hand-written instead of calling pix.gaussian_blur: its depthwise convolutions run through
  # XLA:CPU's slow convolution path (2.4 s for a [64, 128, 128, 3] batch at sigma 4), while the
  # same separable blur as two matmuls with banded [H, H] and [W, W] matrices, which also absorb
  # the mirrored borders, takes 67 ms (and 7 ms vs 400 ms at 64x64).
  hi = jax.lax.Precision.HIGHEST
  x = images.astype(jnp.float32)
  x = jnp.einsum('ij,bjwc->biwc', jnp.asarray(_blur_matrix(h, sigma, radius)), x, precision=hi)
  x = jnp.einsum('ij,bhjc->bhic', jnp.asarray(_blur_matrix(w, sigma, radius)), x, precision=hi)
  return _finish(x, images, (low, high))


def _dct_matrix(n: int) -> np.ndarray:
  """Orthonormal DCT-II matrix [n, n]: coefficients = D @ signal, signal = D.T @ coefficients."""
  k = np.arange(n)[:, None]
  i = np.arange(n)[None, :]
  d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d.astype(np.float32)


def jpeg_blocks(key: jax.Array, images: jax.Array, strength: float,
                value_range: tuple[float, float]) -> jax.Array:
  """JPEG-like blockiness: 8x8 block DCT, quantisation, inverse DCT (deterministic; key unused).

  Pixels are mapped to JPEG's level-shifted 8-bit scale ([-128, 127]) and every channel is coded
  with the standard luminance table times 5 * strength (strength 0.2 is the table itself, about
  libjpeg quality 50; 1.0 about quality 10). There is no colour transform, chroma subsampling or
  entropy coding: only the quantisation that makes JPEG's block artefacts. Sides that are not a
  multiple of 8 are edge-padded and cropped back. `strength` may be traced.

  Args:
    key: unused.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0; 0 is the identity.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  del key
  _check_images(images)
  low, high = _check_range(value_range)
  if _is_concrete_zero(strength):
    return images
  n = _JPEG_BLOCK
  b, h, w, c = images.shape
  ph, pw = -h % n, -w % n
  x = images.astype(jnp.float32)
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  x = (x - low) * (255.0 / (high - low)) - 128.0
  hb, wb = (h + ph) // n, (w + pw) // n
  blocks = x.reshape(b, hb, n, wb, n, c)
  d = jnp.asarray(_dct_matrix(n))
  step = jnp.asarray(_JPEG_LUMINANCE_QUANT) * (_JPEG_SCALE_PER_STRENGTH * strength)
  # Full float32 matmuls: TPUs default to bfloat16 passes, whose error would swamp the small
  # quantisation steps of low strengths.
  hi = jax.lax.Precision.HIGHEST
  coeffs = jnp.einsum('ki,bhiwjc,lj->bhwckl', d, blocks, d, precision=hi)
  # A traced strength of 0 gives zero steps: keep those coefficients rather than divide by 0.
  safe_step = jnp.where(step > 0, step, 1.0)
  coeffs = jnp.where(step > 0, jnp.round(coeffs / safe_step) * safe_step, coeffs)
  blocks = jnp.einsum('ki,bhwckl,lj->bhiwjc', d, coeffs, d, precision=hi)
  x = blocks.reshape(b, h + ph, w + pw, c)[:, :h, :w, :]
  x = (x + 128.0) * ((high - low) / 255.0) + low
  return _finish(x, images, (low, high))


def fading(key: jax.Array, images: jax.Array, strength: float,
           value_range: tuple[float, float]) -> jax.Array:
  """Faded-photo look: contrast loss toward a grey level plus a slight lightening.

  Per image: out = x + a * (g - x) + s, with a = strength * U(0.8, 1) (contrast loss), g the
  midpoint between the image's per-channel mean and the range midpoint (so colour casts wash out
  as well as contrast), and s = 0.1 * strength * (high - low) * U(0, 1) (old prints lighten).
  `strength` may be traced; the contrast factor a is capped at 1.

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0; 0 is the identity, 1 flattens the image to (nearly) a grey level.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  _check_images(images)
  low, high = _check_range(value_range)
  b = images.shape[0]
  u = _uniform(key, (2, b, 1, 1, 1))
  x = images.astype(jnp.float32)
  amount = jnp.minimum(1.0, strength * (0.8 + 0.2 * u[0]))
  grey = 0.5 * (jnp.mean(x, axis=(1, 2), keepdims=True) + 0.5 * (low + high))
  shift = 0.1 * strength * (high - low) * u[1]
  return _finish(x + amount * (grey - x) + shift, images, (low, high))


def pixelate(key: jax.Array, images: jax.Array, strength: float,
             value_range: tuple[float, float]) -> jax.Array:
  """Block-averages then upsamples by repetition (deterministic; key unused).

  Block side = 1 + round(strength * min(H, W) / 8) pixels: strength 0 is the identity, 0.5 gives
  9-pixel blocks at 128x128 and 3-pixel blocks at 28x28. Blocks cut by the right/bottom border
  average only the pixels they hold.

  Args:
    key: unused.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0 (concrete).
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  del key
  _check_images(images)
  low, high = _check_range(value_range)
  strength = _static_strength(strength, 'pixelate')
  b, h, w, c = images.shape
  n = 1 + round(strength * min(h, w) / 8)
  if n == 1:
    return images
  ph, pw = -h % n, -w % n
  pad = ((0, 0), (0, ph), (0, pw), (0, 0))
  x = jnp.pad(images.astype(jnp.float32), pad)
  ones = jnp.pad(jnp.ones((1, h, w, 1), jnp.float32), pad)
  hb, wb = (h + ph) // n, (w + pw) // n
  sums = x.reshape(b, hb, n, wb, n, c).sum(axis=(2, 4))
  counts = ones.reshape(1, hb, n, wb, n, 1).sum(axis=(2, 4))
  means = sums / counts
  out = jnp.repeat(jnp.repeat(means, n, axis=1), n, axis=2)[:, :h, :w, :]
  return _finish(out, images, (low, high))


def scratches(key: jax.Array, images: jax.Array, strength: float,
              value_range: tuple[float, float]) -> jax.Array:
  """Draws ceil(5 * strength) thin straight scratches per image.

  Each scratch is a segment between two uniform random points in the image, rasterised
  analytically: a pixel's coverage is clip(r + 0.5 - d, 0, 1), with d the distance from the pixel
  centre to the segment and r = max(0.5, min(H, W) / 128) the half-width, so lines are about 1 px
  wide at 28x28 and 2 px at 128x128 with a one-pixel soft edge. Each scratch is bright (top 15%
  of the range) or dark (bottom 15%) with equal odds, the same value in all channels; later
  scratches are drawn over earlier ones.

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0 (concrete); 0 draws nothing, 1 draws 5 scratches.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  _check_images(images)
  low, high = _check_range(value_range)
  strength = _static_strength(strength, 'scratches')
  num_lines = math.ceil(5 * strength)
  if num_lines == 0:
    return images
  b, h, w, _ = images.shape
  half_width = max(0.5, min(h, w) / 128)
  # One draw per line: 4 endpoint coordinates and 1 value (its side of 0.5 picks bright/dark).
  u = _uniform(key, (5, b, num_lines, 1, 1))
  p0 = jnp.stack([u[0] * h, u[1] * w], axis=-1)  # [B, L, 1, 1, 2] as (row, col)
  p1 = jnp.stack([u[2] * h, u[3] * w], axis=-1)
  level = 0.3 * jnp.abs(u[4] - 0.5)  # in [0, 0.15]
  value = jnp.where(u[4] >= 0.5, high - level * (high - low), low + level * (high - low))
  yy, xx = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing='ij')
  p = jnp.stack([yy, xx], axis=-1)  # [H, W, 2] pixel centres
  d = p1 - p0
  t = jnp.sum((p - p0) * d, -1) / jnp.maximum(jnp.sum(d * d, -1), 1e-6)
  nearest = p0 + jnp.clip(t, 0.0, 1.0)[..., None] * d
  dist = jnp.linalg.norm(p - nearest, axis=-1)  # [B, L, H, W]
  coverage = jnp.clip(half_width + 0.5 - dist, 0.0, 1.0)
  x = images.astype(jnp.float32)
  for i in range(num_lines):
    alpha = coverage[:, i, :, :, None]
    x = x + alpha * (value[:, i, :, :, None] - x)
  return _finish(x, images, (low, high))


# S6's synthetic distortions and the factor each applies to the shared strength. Noise is scaled
# down because its strength is a std in range widths: at 1.0 it would bury the image, where the
# other kinds at 1.0 are strong but still leave it recognisable. At strength 0.5 on 64x64 images
# this is blur sigma 2 px, noise std 0.1, 40-50% contrast loss, 5 px blocks or 3 scratches.
RESTORATION_KINDS = ('gaussian_blur', 'gaussian_noise', 'fading', 'pixelate', 'scratches')
RESTORATION_SCALES = (1.0, 0.2, 1.0, 1.0, 1.0)


def restoration_mix(key: jax.Array, images: jax.Array, strength: float,
                    value_range: tuple[float, float]) -> jax.Array:
  """One of S6's distortions per image, drawn uniformly: blur, noise, fading, pixelation, scratches.

  `random_corruption` over `RESTORATION_KINDS` with strength times `RESTORATION_SCALES`, so clean
  data of any kind becomes (distorted, clear) pairs on the fly.

  Args:
    key: PRNG key; picks each image's kind and that kind's draws.
    images: float [B, H, W, C] in `value_range`.
    strength: >= 0 (concrete); 0 is the identity.
    value_range: (low, high).

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  return random_corruption(key, images, RESTORATION_KINDS, strength, value_range,
                           RESTORATION_SCALES)


CORRUPTIONS: dict[str, CorruptionFn] = {
    'none': none,
    'gaussian_noise': gaussian_noise,
    'salt_and_pepper': salt_and_pepper,
    'random_patches': random_patches,
    'random_patches_per_batch': random_patches_per_batch,
    'downsample_blur': downsample_blur,
    'gaussian_blur': gaussian_blur,
    'jpeg_blocks': jpeg_blocks,
    'fading': fading,
    'pixelate': pixelate,
    'scratches': scratches,
    'restoration_mix': restoration_mix,
}

# Config validation reads this list; extend it in place so anyone holding a reference sees the
# names, keeping 'none' first.
_kinds = config_lib.EXTRA_CHOICES.setdefault('corruption.kind', ['none'])
_kinds.extend(name for name in CORRUPTIONS if name not in _kinds)


def _lookup(kind: str) -> CorruptionFn:
  if kind not in CORRUPTIONS:
    raise ValueError(f'unknown corruption kind {kind!r}; allowed: {", ".join(CORRUPTIONS)}')
  return CORRUPTIONS[kind]


def corrupt(kind: str, key: jax.Array, images: jax.Array, strength: float,
            value_range: tuple[float, float]) -> jax.Array:
  """Applies the registered corruption `kind` to images [B, H, W, C]; see the module docstring.

  Raises:
    ValueError: for a kind not in `CORRUPTIONS` (the message lists the allowed kinds).
  """
  return _lookup(kind)(key, images, strength, value_range)


def random_corruption(key: jax.Array, images: jax.Array, kinds: Sequence[str], strength: float,
                      value_range: tuple[float, float],
                      scales: Sequence[float] | None = None) -> jax.Array:
  """Corrupts each image with one kind drawn uniformly from `kinds` (S6's on-the-fly pairs).

  Every kind is computed for the whole batch and each image picks its own, which costs
  len(kinds) corruptions but keeps shapes static and the function jit-able.

  Args:
    key: PRNG key.
    images: float [B, H, W, C] in `value_range`.
    kinds: non-empty sequence of registered kind names (repeats weight a kind more).
    strength: passed to every kind (concrete), times its entry in `scales`.
    value_range: (low, high).
    scales: one factor >= 0 per kind, or None for all 1.

  Returns:
    [B, H, W, C], same dtype, in `value_range`.
  """
  _check_images(images)
  if not kinds:
    raise ValueError(f'random_corruption needs at least one kind; allowed: '
                     f'{", ".join(CORRUPTIONS)}')
  fns = [_lookup(k) for k in kinds]
  scales = (1.0,) * len(fns) if scales is None else tuple(scales)
  if len(scales) != len(fns):
    raise ValueError(f'random_corruption: {len(scales)} scales for {len(fns)} kinds; give one '
                     'per kind')
  choice_key, *kind_keys = jax.random.split(key, len(fns) + 1)
  outs = jnp.stack([fn(k, images, strength * scale, value_range)
                    for fn, k, scale in zip(fns, kind_keys, scales, strict=True)])
  b = images.shape[0]
  choice = jnp.minimum(jnp.floor(_uniform(choice_key, (b,)) * len(fns)), len(fns) - 1)
  choice = choice.astype(jnp.int32)
  return outs[choice, jnp.arange(b)]
