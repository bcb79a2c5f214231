"""Figures as PNG files: image grids, reconstructions, samples and loss curves (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')  # Headless: figures are files, never windows.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 mosaic with `columns` cells a row, `gap` white pixels apart."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = r * (h + gap), col * (w + gap)
    grid[top:top + h, left:left + w] = image
  return grid


def _show(ax, image: np.ndarray) -> None:
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=255, interpolation='nearest')
  else:
    ax.imshow(image, interpolation='nearest')
  ax.axis('off')


def save_rows(path: str, rows: Sequence[np.ndarray], titles: Sequence[str]) -> str:
  """One titled strip per row of uint8 [N, H, W, C] images, e.g. original | reconstruction."""
  fig, axes = plt.subplots(len(rows), 1, figsize=(max(4, len(rows[0]) * 0.8),
                                                   1.1 * len(rows) + 0.3), squeeze=False)
  for ax, images, title in zip(axes[:, 0], rows, titles):
    _show(ax, image_grid(np.asarray(images), len(images)))
    ax.set_title(title, fontsize=9, loc='left')
  fig.tight_layout()
  return _save(fig, path)


def save_grid(path: str, images: np.ndarray, columns: int, title: str = '') -> str:
  fig, ax = plt.subplots(figsize=(columns * 0.8, (-(-len(images) // columns)) * 0.8 + 0.4))
  _show(ax, image_grid(np.asarray(images), columns))
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def save_curves(path: str, records: list[dict], names: Sequence[str] = ('loss',)) -> str:
  """Train and eval curves of the named metrics from a run's metric records."""
  fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
  for ax, name in zip(axes[0], names):
    for split, style in (('train', '-'), ('eval', 'o-')):
      points = [(r['step'], r[name]) for r in records if r.get('split') == split and name in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, style, label=split, markersize=3)
    ax.set_xlabel('step')
    ax.set_title(name)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
