"""Figures of a (conditional) VAE's latent space: a class-conditional sample grid, the test set's
posterior means coloured by class, and the decoded latent manifold of each class (matplotlib).

Images are uint8 [N, H, W, C] as `jvae.plotting` draws them (`jvae.data.pipeline.to_uint8`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jvae import plotting

# jvae.plotting selected the headless backend before importing pyplot.
plt = plotting.plt


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projects points [N, D] onto their first two principal components.

  Returns:
    (projected [N, 2], explained [2]: the fraction of the total variance along each component).
    With D == 2 the points come back unchanged and `explained` is the variance of each axis over
    the total.
  """
  points = np.asarray(points, np.float64)
  centred = points - points.mean(axis=0)
  total = max(float(np.sum(np.var(centred, axis=0))), 1e-12)
  if points.shape[1] <= 2:
    padded = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return padded, np.var(padded, axis=0) / total
  _, singular, vt = np.linalg.svd(centred, full_matrices=False)
  explained = singular[:2]**2 / len(points) / total
  return centred @ vt[:2].T, explained


def _class_name(class_names: Sequence[str], label: int) -> str:
  return str(class_names[label]) if label < len(class_names) else str(label)


def save_class_grid(path: str, images: np.ndarray, num_classes: int,
                    class_names: Sequence[str] = (), title: str = '') -> str:
  """One row per class: images [num_classes * per_class, H, W, C] ordered class by class."""
  per_class = len(images) // num_classes
  mosaic = plotting.image_grid(np.asarray(images)[:num_classes * per_class], per_class)
  height = images.shape[1]
  fig, ax = plt.subplots(figsize=(0.6 * per_class + 0.8, 0.6 * num_classes + 0.5))
  ax.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap='gray', vmin=0, vmax=255,
            interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([(height + 1) * k + height / 2 for k in range(num_classes)],
                [_class_name(class_names, k) for k in range(num_classes)])
  ax.tick_params(length=0)
  for spine in ax.spines.values():
    spine.set_visible(False)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def save_latent_scatter(path: str, means: np.ndarray, labels: np.ndarray,
                        class_names: Sequence[str] = (), title: str = '') -> str:
  """Posterior means [N, D] coloured by label [N]; projected by PCA when D > 2."""
  points, explained = pca_2d(means)
  projected = np.asarray(means).shape[1] > 2
  fig, ax = plt.subplots(figsize=(6.4, 5.6))
  cmap = plt.get_cmap('tab10')
  for k in np.unique(labels):
    chosen = labels == k
    ax.scatter(points[chosen, 0], points[chosen, 1], s=2, alpha=0.5, color=cmap(int(k) % 10),
               label=_class_name(class_names, int(k)), rasterized=True)
  if projected:
    ax.set_xlabel(f'PC 1 ({100 * explained[0]:.0f}% of the variance)')
    ax.set_ylabel(f'PC 2 ({100 * explained[1]:.0f}% of the variance)')
  else:
    ax.set_xlabel('z[0]')
    ax.set_ylabel('z[1]')
  ax.legend(markerscale=5, fontsize=8, loc='upper right', framealpha=0.8)
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def save_manifolds(path: str, grids: Mapping[int, np.ndarray], size: int, span: float,
                   class_names: Sequence[str] = (), columns: int = 5) -> str:
  """One panel per class of its decoded latent grid.

  Args:
    path: the PNG to write.
    grids: label -> images [size * size, H, W, C] from `jvae.generate.latent_grid` (top row
      z[1] = +span, left column z[0] = -span).
    size: grid side.
    span: the grid covers [-span, span]^2; the axes are labelled in latent units.
    class_names: names by label.
    columns: panels per row.
  """
  labels = sorted(grids)
  rows = -(-len(labels) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, label in zip(axes.ravel(), labels):
    mosaic = plotting.image_grid(np.asarray(grids[label]), size, gap=0)
    # Cells are centred on their latents, so the picture reaches half a step beyond +-span.
    half = span / (size - 1) if size > 1 else span
    ax.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap='gray', vmin=0,
              vmax=255, interpolation='nearest',
              extent=(-span - half, span + half, -span - half, span + half))
    ax.axis('on')
    ax.tick_params(labelsize=6)
    ax.set_title(_class_name(class_names, label), fontsize=9)
  fig.supxlabel('z[0]', fontsize=9)
  fig.supylabel('z[1]', fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def _save(fig, path: str) -> str:
  # The same writer as every other figure of a run (directory, dpi, closing the figure).
  return plotting._save(fig, path)
