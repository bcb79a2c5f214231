"""The SAAAE figure: original | masked | reconstruction | anchor map, one column per image."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use('Agg')  # Headless: figures are files, never windows.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def latent_grid_shape(size: int) -> tuple[int, int]:
  """(rows, columns) close to 1:2 that hold `size` latent values, e.g. 128 -> (8, 16)."""
  rows = max(1, int(math.sqrt(size / 2)))
  while size % rows:
    rows -= 1
  return rows, size // rows


def save_anchor_figure(path: str, original: np.ndarray, masked: np.ndarray,
                       reconstruction: np.ndarray, anchor_map: np.ndarray | None = None,
                       anchor: np.ndarray | None = None, title: str = '') -> str:
  """Writes the figure and returns `path`.

  Args:
    path: the .png to write.
    original: uint8 [N, H, W, C] clean held-out images.
    masked: uint8 [N, H, W, C] the model inputs (the masked images).
    reconstruction: uint8 [N, H, W, C] the model outputs.
    anchor_map: float [N, H, W] >= 0, where in the input the anchor looks (drawn per image on its
      own colour scale), or None for a model without an anchor.
    anchor: float [N, D] in [0, 1], the normalised anchor a_norm over the latent dimensions
      (drawn as a grid, 1 = least noise), or None.
    title: the figure title.
  """
  rows = [('original', original), ('masked input', masked), ('reconstruction', reconstruction)]
  if anchor_map is not None:
    rows.append(('anchor map\n|d sum(a_norm) / dx|', anchor_map))
  if anchor is not None:
    grid = latent_grid_shape(anchor.shape[-1])
    rows.append((f'a_norm over the\n{anchor.shape[-1]} latent dims', anchor.reshape(-1, *grid)))
  count = len(original)
  fig, axes = plt.subplots(len(rows), count, figsize=(1.3 * count + 1.2, 1.35 * len(rows) + 0.4),
                           squeeze=False)
  for r, (label, images) in enumerate(rows):
    for i in range(count):
      ax = axes[r, i]
      image = np.asarray(images[i])
      if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=255, interpolation='nearest')
      elif image.ndim == 3:
        ax.imshow(image, interpolation='nearest')
      else:
        vmax = 1.0 if label.startswith('a_norm') else max(float(image.max()), 1e-12)
        ax.imshow(image, cmap='magma', vmin=0.0, vmax=vmax, interpolation='nearest')
      ax.axis('off')
    axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha='right', va='center',
                    fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
