"""Overlapping tiles: split an image of any size into model-sized tiles and blend them back.

A model built for H x W inputs processes a larger image at full resolution tile by tile. Tiles
overlap, and each output pixel is a weighted mean of the tiles covering it, with weights from a
smooth window that is largest at a tile's centre and small (never zero) at its edges, so seams
between tiles fade out instead of showing as steps.

All functions are pure and work on numpy arrays [H, W, C] (any float or integer dtype in,
float32 out of `blend_tiles`). The weights of the tiles covering a pixel are normalized to sum to
1 before they multiply the tiles, so a pixel that only one tile covers is that tile's pixel
exactly: an image of exactly the tile size comes back bit-for-bit as the single tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> np.ndarray:
  """Start offsets of tiles covering [0, length) along one axis.

  Args:
    length: the axis length in pixels, >= 1.
    tile: the tile length, >= 1.
    overlap: the least overlap between neighbouring tiles in pixels, in [0, tile).

  Returns:
    int64 [n], increasing, the first 0 and the last max(length - tile, 0). The tiles are spread
    evenly, so neighbours overlap by at least `overlap` pixels (more when the spacing rounds).
  """
  if length < 1 or tile < 1:
    raise ValueError(f'length and tile must be >= 1; got {length} and {tile}')
  if not 0 <= overlap < tile:
    raise ValueError(f'overlap must be in [0, {tile}) for tiles of {tile}; got {overlap}')
  if length <= tile:
    return np.zeros(1, np.int64)
  count = math.ceil((length - tile) / (tile - overlap)) + 1
  return np.round(np.linspace(0, length - tile, count)).astype(np.int64)


def tile_origins(image_hw: tuple[int, int], tile_hw: tuple[int, int],
                 overlap: tuple[int, int]) -> np.ndarray:
  """(y, x) top-left corners of the tiles covering an image, row by row: int64 [n, 2].

  Images smaller than a tile along an axis get one tile there; `pad_to_tiles` pads them.
  """
  ys = tile_starts(image_hw[0], tile_hw[0], overlap[0])
  xs = tile_starts(image_hw[1], tile_hw[1], overlap[1])
  return np.stack(np.meshgrid(ys, xs, indexing='ij'), axis=-1).reshape(-1, 2)


def pad_to_tiles(image: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
  """Pads [H, W, C] at the bottom and right to at least the tile size, by mirroring.

  Mirroring keeps the padded pixels image-like, so the model sees no artificial edge; the
  padding is cropped away by `blend_tiles`.
  """
  pad_h = max(tile_hw[0] - image.shape[0], 0)
  pad_w = max(tile_hw[1] - image.shape[1], 0)
  if not (pad_h or pad_w):
    return image
  return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode='symmetric')


def extract_tiles(image: np.ndarray, origins: np.ndarray, tile_hw: tuple[int, int]
                  ) -> np.ndarray:
  """Tiles [n, th, tw, C] of a (padded) image [H, W, C] at `origins` [n, 2]."""
  th, tw = tile_hw
  return np.stack([image[y:y + th, x:x + tw] for y, x in origins])


def blend_window(tile_hw: tuple[int, int]) -> np.ndarray:
  """The blending weights of one tile: float32 [th, tw], in (0, 1], separable.

  A sin^2 (Hann) window sampled at pixel centres: it tapers smoothly towards the tile's edges
  (where a model also sees least context) but stays positive, so every covered pixel has weight.
  """

  def hann(n: int) -> np.ndarray:
    return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

  return np.outer(hann(tile_hw[0]), hann(tile_hw[1])).astype(np.float32)


def weight_sum(origins: np.ndarray, tile_hw: tuple[int, int], padded_hw: tuple[int, int]
               ) -> np.ndarray:
  """The summed window weights of all tiles at every pixel: float32 [H, W], > 0 where covered."""
  window = blend_window(tile_hw)
  total = np.zeros(padded_hw, np.float32)
  th, tw = tile_hw
  for y, x in origins:
    total[y:y + th, x:x + tw] += window
  return total


def blend_tiles(tiles: np.ndarray, origins: np.ndarray, image_hw: tuple[int, int],
                padded_hw: tuple[int, int] | None = None) -> np.ndarray:
  """Blends processed tiles [n, th, tw, C] back into an image float32 [H, W, C].

  Args:
    tiles: the tiles, in the order of `origins`.
    origins: int [n, 2], the (y, x) corners the tiles were taken from (`tile_origins`).
    image_hw: the size of the original image; padding beyond it is cropped.
    padded_hw: the size of the padded image the origins refer to; default: the least size
      that holds every tile.
  """
  th, tw = tiles.shape[1:3]
  if padded_hw is None:
    padded_hw = (int(origins[:, 0].max()) + th, int(origins[:, 1].max()) + tw)
  out = np.zeros((*padded_hw, tiles.shape[-1]), np.float32)
  accumulate_tiles(out, tiles, origins, weight_sum(origins, (th, tw), padded_hw))
  return out[:image_hw[0], :image_hw[1]]


def accumulate_tiles(out: np.ndarray, tiles: np.ndarray, origins: np.ndarray,
                     total: np.ndarray) -> None:
  """Adds tiles [n, th, tw, C] into `out` [H, W, C] in place, weighted by window / `total`.

  The one in-place helper, so that a long image can be blended chunk by chunk without holding
  every tile; `total` is `weight_sum` over ALL tiles of the image.
  """
  window = blend_window(tiles.shape[1:3])
  th, tw = tiles.shape[1:3]
  for tile, (y, x) in zip(tiles, origins):
    # Normalizing the weights before the multiply makes a lone tile's weight exactly 1.0.
    weight = window / total[y:y + th, x:x + tw]
    out[y:y + th, x:x + tw] += weight[..., None] * tile.astype(np.float32)


def overlap_pixels(tile_hw: tuple[int, int], fraction: float) -> tuple[int, int]:
  """The overlap in pixels for an overlap given as a fraction in [0, 1) of the tile size."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'overlap fraction must be in [0, 1); got {fraction}')
  return tuple(min(int(round(fraction * t)), t - 1) for t in tile_hw)


def map_tiled(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray],
              tile_hw: tuple[int, int], overlap: tuple[int, int], chunk: int = 64
              ) -> np.ndarray:
  """Applies `fn` to overlapping tiles of an image and blends the results: float32 [H, W, C'].

  Args:
    image: [H, W, C], any size (smaller than a tile is padded by mirroring).
    fn: tiles [n, th, tw, C] -> processed tiles [n, th, tw, C'] (n <= chunk).
    tile_hw: the tile size, e.g. the model's input size.
    overlap: least overlap between neighbouring tiles in pixels, per axis.
    chunk: tiles per call of `fn`, which bounds memory on large images.
  """
  height, width = image.shape[:2]
  padded = pad_to_tiles(image, tile_hw)
  origins = tile_origins((height, width), tile_hw, overlap)
  total = weight_sum(origins, tile_hw, padded.shape[:2])
  out = None
  for start in range(0, len(origins), chunk):
    part = origins[start:start + chunk]
    processed = np.asarray(fn(extract_tiles(padded, part, tile_hw)))
    if out is None:
      out = np.zeros((*padded.shape[:2], processed.shape[-1]), np.float32)
    accumulate_tiles(out, processed, part, total)
  return out[:height, :width]
