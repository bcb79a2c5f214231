"""Synthetic speckle: light behind a multimode fibre or scattered off a rough surface.

The model is the textbook one for fully developed speckle: a field of unit amplitude and
independent, uniformly random phase fills a circular pupil in the Fourier plane, and the camera sees
the intensity of its Fourier transform. Each image pixel then sums many random phasors, so the field
is circular complex Gaussian and the intensity, divided by its mean, is exponentially distributed
(contrast std/mean = 1). The pupil radius sets the grain size: speckle grains are about
`size / (2 * radius)` pixels across.

Everything here is a pure function of its inputs, so a record is regenerated identically from
(seed, split, index) without storing anything.
"""

from __future__ import annotations

import zlib

import numpy as np

# Mean-normalised intensity that maps to 255. Fully developed speckle exceeds 4x its mean with
# probability exp(-4) ~ 1.8%, so few pixels clip, and a fixed constant (rather than a per-image
# percentile) keeps brightness comparable across images, as a camera with fixed exposure would.
DEFAULT_SATURATION = 4.0


def pupil_mask(size: int, pupil_fraction: float) -> np.ndarray:
  """The circular pupil in FFT layout (zero frequency at [0, 0]).

  Args:
    size: the image side in pixels, >= 1.
    pupil_fraction: pupil radius as a fraction of `size`, > 0. Radii below one frequency step are
      raised to one step: a smaller pupil passes only the zero frequency, which gives a uniform
      image (a single mode) rather than speckle.

  Returns:
    bool [size, size], True inside the pupil.
  """
  radius = max(pupil_fraction * size, 1.0)
  freqs = np.fft.fftfreq(size) * size  # integer frequencies, wrapped the way ifft2 expects
  fy, fx = np.meshgrid(freqs, freqs, indexing='ij')
  return fy * fy + fx * fx <= radius * radius


def speckle_image(rng: np.random.Generator, size: int, pupil_fraction: float) -> np.ndarray:
  """One speckle intensity pattern, normalised to mean 1.

  Args:
    rng: the source of the random pupil phases; the output is a pure function of its state.
    size: the image side in pixels, >= 1.
    pupil_fraction: pupil radius as a fraction of `size`, in (0, 0.5] for a pupil inside the
      frequency square (larger values are clipped by it).

  Returns:
    float64 [size, size], >= 0, with mean 1. For fully developed speckle the values follow an
    exponential distribution with rate 1 (std/mean ~ 1).
  """
  mask = pupil_mask(size, pupil_fraction)
  # Phases are drawn for the whole grid, not just the pupil, so that the same rng state gives the
  # same pattern at a different pupil size (useful when comparing pupils).
  phase = rng.uniform(0.0, 2.0 * np.pi, size=(size, size))
  field = np.fft.ifft2(np.where(mask, np.exp(1j * phase), 0.0))
  intensity = field.real ** 2 + field.imag ** 2
  return intensity / intensity.mean()


def to_uint8(intensity: np.ndarray, saturation: float = DEFAULT_SATURATION) -> np.ndarray:
  """Maps mean-normalised intensity linearly to uint8, `saturation` x mean -> 255 (clipped).

  Args:
    intensity: float [...], >= 0, mean about 1.
    saturation: the intensity shown as full white, > 0.

  Returns:
    uint8 [...] in [0, 255].
  """
  scaled = np.clip(intensity * (255.0 / saturation), 0.0, 255.0)
  return np.round(scaled).astype(np.uint8)


def split_id(split: str) -> int:
  """A stable integer for a split name (Python's `hash` is salted per process, crc32 is not).

  'val' and 'validation' name the same split.
  """
  name = 'validation' if split == 'val' else split
  return zlib.crc32(name.encode('utf-8'))


def speckle_record_image(seed: int, split: str, index: int, size: int,
                         pupil_fraction: float) -> np.ndarray:
  """The image of record `index` of `split`, identical on every call and in every process.

  Args:
    seed: the experiment seed, >= 0.
    split: the split name; records of different splits are independent.
    index: the record index, >= 0.
    size: the image side in pixels.
    pupil_fraction: pupil radius as a fraction of `size`.

  Returns:
    uint8 [size, size] in [0, 255].
  """
  rng = np.random.default_rng([seed, split_id(split), index])
  return to_uint8(speckle_image(rng, size, pupil_fraction))
