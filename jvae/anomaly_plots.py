"""Figures of anomaly detection: score histograms with the threshold, and the ROC curve."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')  # Headless: figures are files, never windows.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _bins(arrays: list[np.ndarray], count: int = 60) -> tuple[np.ndarray, bool]:
  """Shared bin edges over all scores; logarithmic when they span more than two decades."""
  values = np.concatenate([a for a in arrays if a is not None and a.size])
  low, high = float(values.min()), float(values.max())
  if high <= low:
    return np.linspace(low - 0.5, high + 0.5, count + 1), False
  if low > 0 and high / low > 100:
    return np.geomspace(low, high, count + 1), True
  return np.linspace(low, high, count + 1), False


def save_score_histogram(path: str, normal: np.ndarray, anomalous: np.ndarray | None,
                         threshold: float, title: str, train: np.ndarray | None = None) -> str:
  """Density histograms of the scores of normal (and anomalous, and train) images.

  Args:
    path: the .png to write.
    normal: [N] scores of held-out normal images.
    anomalous: [M] scores of anomalous images, or None.
    threshold: drawn as a vertical line; images above it are flagged.
    title: the axes title.
    train: [K] scores of the training images the threshold was taken from, or None.

  Returns:
    `path`.
  """
  bins, log_x = _bins([normal, anomalous, train])
  fig, ax = plt.subplots(figsize=(6.4, 3.6))
  if train is not None:
    ax.hist(train, bins=bins, density=True, histtype='step', color='0.4',
            label=f'train (n={train.size})')
  ax.hist(normal, bins=bins, density=True, alpha=0.55, color='tab:blue',
          label=f'normal (n={normal.size})')
  if anomalous is not None:
    ax.hist(anomalous, bins=bins, density=True, alpha=0.55, color='tab:red',
            label=f'anomalous (n={anomalous.size})')
  ax.axvline(threshold, color='k', linestyle='--', label=f'threshold {threshold:.4g}')
  if log_x:
    ax.set_xscale('log')
  ax.set_xlabel('anomaly score (higher = more anomalous)')
  ax.set_ylabel('density')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def save_roc_curve(path: str, fpr: np.ndarray, tpr: np.ndarray, auroc: float,
                   operating_point: tuple[float, float] | None = None,
                   point_label: str = 'threshold') -> str:
  """The ROC curve (from `jvae.metrics.roc_curve`) with the threshold's (FPR, TPR) marked."""
  fig, ax = plt.subplots(figsize=(4.2, 4.0))
  ax.plot(fpr, tpr, color='tab:red', label=f'AUROC {auroc:.4f}')
  ax.plot([0, 1], [0, 1], color='0.6', linestyle=':', label='chance')
  if operating_point is not None:
    ax.plot(*operating_point, 'ko', label=f'{point_label}: FPR {operating_point[0]:.3f}, '
            f'TPR {operating_point[1]:.3f}')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel('false positive rate (normal flagged)')
  ax.set_ylabel('true positive rate (anomalies flagged)')
  ax.legend(fontsize=8, loc='lower right')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
