"""Image-quality and anomaly-detection metrics.

Image metrics are pure, jit-able JAX functions on batches a, b: float [B, H, W, C] that return one
value per image, shape [B]; callers average over the batch (or over a whole split). Metrics that
depend on the value range take it explicitly: `max_value` is the dynamic range (high - low), so
1.0 for [0, 1] images and 2.0 for [-1, 1] images.

SPEC's "MSE" for S1 is the per-image SUM of squared errors on the [0, 1] scale
(`sum_squared_error`); map [-1, 1] images to [0, 1] first, e.g. (x + 1) / 2.

Anomaly metrics (`roc_auc`, `roc_curve`, `precision_recall_at`, `percentile_threshold`) run on
the host with numpy on 1-D score arrays: labels are 1 for anomalous, 0 for normal, and a higher
score means more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

# SSIM's standard window (Wang et al. 2004): 11x11 Gaussian with sigma 1.5.
_SSIM_FILTER_SIZE = 11
_SSIM_FILTER_SIGMA = 1.5


def _check_pair(a: jax.Array, b: jax.Array) -> None:
  if a.ndim != 4 or a.shape != b.shape:
    raise ValueError(f'expected two [B, H, W, C] batches of one shape; got {a.shape} and '
                     f'{b.shape}')


def _per_image(x: jax.Array, reduce: Callable[..., jax.Array]) -> jax.Array:
  return reduce(x.reshape(x.shape[0], -1), axis=-1)


def sum_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image sum over pixels and channels of (a - b)^2: [B, H, W, C] x 2 -> [B]."""
  _check_pair(a, b)
  diff = a.astype(jnp.float32) - b.astype(jnp.float32)
  return _per_image(jnp.square(diff), jnp.sum)


def mean_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image mean over pixels and channels of (a - b)^2: [B, H, W, C] x 2 -> [B]."""
  _check_pair(a, b)
  return pix.mse(a.astype(jnp.float32), b.astype(jnp.float32))


def mean_absolute_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image mean over pixels and channels of |a - b|: [B, H, W, C] x 2 -> [B]."""
  _check_pair(a, b)
  diff = a.astype(jnp.float32) - b.astype(jnp.float32)
  return _per_image(jnp.abs(diff), jnp.mean)


def psnr(a: jax.Array, b: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, 10 * log10(max_value^2 / MSE), per image.

  `pix.psnr` assumes a dynamic range of 1, so both images are divided by `max_value` first.
  Identical images give +inf.

  Args:
    a: float [B, H, W, C].
    b: float [B, H, W, C].
    max_value: the dynamic range (high - low): 1.0 for [0, 1], 2.0 for [-1, 1], 255 for 8-bit.

  Returns:
    [B] float32, in dB.
  """
  _check_pair(a, b)
  a = a.astype(jnp.float32) / max_value
  b = b.astype(jnp.float32) / max_value
  return pix.psnr(a, b)


def _valid_filter_matrix(n: int, size: int, sigma: float) -> np.ndarray:
  """[n - size + 1, n] matrix applying pix.ssim's 1-D Gaussian window with 'valid' extent."""
  half = size // 2
  shift = (2 * half - size + 1) / 2
  taps = np.exp(-0.5 * ((np.arange(size) - half + shift) / sigma)**2)
  taps /= taps.sum()
  m = np.zeros((n - size + 1, n), np.float64)
  for i in range(n - size + 1):
    m[i, i:i + size] = taps  # the taps are symmetric, so convolution needs no flip
  return m.astype(np.float32)


def _ssim_filter_fn(h: int, w: int, size: int, sigma: float) -> Callable[[jax.Array], jax.Array]:
  """pix.ssim's separable Gaussian window, [B, H, W, C] -> [B, H - size + 1, W - size + 1, C]."""
  mh = jnp.asarray(_valid_filter_matrix(h, size, sigma))
  mw = jnp.asarray(_valid_filter_matrix(w, size, sigma))
  hi = jax.lax.Precision.HIGHEST

  def filter_fn(z: jax.Array) -> jax.Array:
    z = jnp.einsum('ij,bjwc->biwc', mh, z, precision=hi)
    return jnp.einsum('ij,bhjc->bhic', mw, z, precision=hi)

  return filter_fn


def ssim(a: jax.Array, b: jax.Array, max_value: float = 1.0,
         filter_size: int | None = None) -> jax.Array:
  """Mean structural similarity per image (`pix.ssim`; channels are averaged).

  The standard window is an 11x11 Gaussian with sigma 1.5, which needs images of at least 11 px.
  The window side defaults to min(11, H, W) and sigma is always 1.5 * side / 11, so smaller
  images get a proportionally smaller window; SSIM from a smaller window is not comparable with
  11x11 values. SSIM's luminance term is not shift-invariant: for values comparable with the usual
  [0, 1] SSIM, map [-1, 1] images to [0, 1] first rather than passing max_value=2.

  Args:
    a: float [B, H, W, C].
    b: float [B, H, W, C].
    max_value: the dynamic range (high - low): 1.0 for [0, 1], 2.0 for [-1, 1].
    filter_size: window side, 1 <= filter_size <= min(H, W); None picks min(11, H, W).

  Returns:
    [B] float32, in [-1, 1]; 1 for identical images.
  """
  _check_pair(a, b)
  side = min(a.shape[1], a.shape[2])
  size = min(_SSIM_FILTER_SIZE, side) if filter_size is None else filter_size
  if not 1 <= size <= side:
    raise ValueError(f'ssim: filter_size {size} must be between 1 and the image side {side}')
  sigma = _SSIM_FILTER_SIGMA * size / _SSIM_FILTER_SIZE
  # pix.ssim's own window is a vmapped jnp.convolve, which XLA:CPU runs through its slow
  # convolution path (1.7-2.6 s for a [64, 128, 128, 3] pair); the same window as two banded
  # matmuls (filter_fn) gives the same values (tested) in about a fifth of the time.
  filter_fn = _ssim_filter_fn(a.shape[1], a.shape[2], size, sigma)
  return pix.ssim(a.astype(jnp.float32), b.astype(jnp.float32), max_val=max_value,
                  filter_size=size, filter_sigma=sigma, filter_fn=filter_fn)


def channel_histograms(images: jax.Array, bins: int = 256,
                       value_range: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
  """Per-image, per-channel intensity histograms with `bins` equal bins over `value_range`.

  Bins are [low + k * w, low + (k + 1) * w) with w = (high - low) / bins; the last bin also holds
  `high` (as in np.histogram) and values outside the range are clipped into the end bins.

  Args:
    images: float [B, H, W, C].
    bins: number of bins (static).
    value_range: (low, high).

  Returns:
    [B, C, bins] float32 counts; each [b, c] row sums to H * W.
  """
  low, high = (float(v) for v in value_range)
  if not high > low:
    raise ValueError(f'value_range must be (low, high) with high > low; got {value_range!r}')
  b, h, w, c = images.shape
  x = images.astype(jnp.float32)
  idx = jnp.floor((x - low) * (bins / (high - low))).astype(jnp.int32)
  idx = jnp.clip(idx, 0, bins - 1)
  idx = jnp.moveaxis(idx, -1, 1).reshape(b * c, h * w)
  # bincount with a static length is jit-able and, unlike a one-hot, needs no [.., bins] buffer.
  counts = jax.vmap(lambda v: jnp.bincount(v, length=bins))(idx)
  return counts.reshape(b, c, bins).astype(jnp.float32)


def histogram_correlation(a: jax.Array, b: jax.Array, bins: int = 256,
                          value_range: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
  """Pearson correlation of per-channel intensity histograms, averaged over channels (SPEC S6).

  Per channel this is OpenCV's `compareHist(..., HISTCMP_CORREL)`. When either histogram has zero
  variance over the bins (all bins equal) the correlation is undefined; it is taken as 1.0 if the
  two histograms are identical and 0.0 otherwise (OpenCV returns 1.0 in both cases).

  Args:
    a: float [B, H, W, C].
    b: float [B, H, W, C].
    bins: number of histogram bins (static).
    value_range: (low, high) the bins span.

  Returns:
    [B] float32 in [-1, 1]; 1 for images with identical histograms.
  """
  _check_pair(a, b)
  ha = channel_histograms(a, bins, value_range)
  hb = channel_histograms(b, bins, value_range)
  da = ha - jnp.mean(ha, axis=-1, keepdims=True)
  db = hb - jnp.mean(hb, axis=-1, keepdims=True)
  num = jnp.sum(da * db, axis=-1)
  denom_sq = jnp.sum(da * da, axis=-1) * jnp.sum(db * db, axis=-1)
  degenerate = denom_sq == 0
  # Counts are integers, so a zero variance is exactly zero; the where keeps the NaN branch out.
  corr = num / jnp.sqrt(jnp.where(degenerate, 1.0, denom_sq))
  same = jnp.all(ha == hb, axis=-1)
  corr = jnp.where(degenerate, jnp.where(same, 1.0, 0.0), corr)
  return jnp.mean(corr, axis=-1)


def _scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f'scores and labels differ in length: {scores.size} vs {labels.size}')
  if not np.all(np.isin(labels, (0, 1))):
    raise ValueError('labels must be 0 (normal) or 1 (anomalous)')
  return scores, labels.astype(bool)


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x, tied values sharing the mean of their ranks."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = x[order]
  # Group boundaries of equal values; each group's rank is the mean of its positions.
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
  ends = np.r_[starts[1:], x.size]
  group_rank = (starts + ends + 1) / 2.0
  ranks = np.empty(x.size, dtype=np.float64)
  ranks[order] = np.repeat(group_rank, ends - starts)
  return ranks


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve for anomaly scores (Mann-Whitney U with average ranks for ties).

  Equals the probability that a random anomalous image scores above a random normal one, ties
  counting one half; matches `sklearn.metrics.roc_auc_score`.

  Args:
    scores: [N] anomaly scores, higher = more anomalous.
    labels: [N] 1 for anomalous, 0 for normal; both classes must occur.

  Returns:
    AUROC in [0, 1].
  """
  scores, labels = _scores_and_labels(scores, labels)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError('roc_auc needs both normal (0) and anomalous (1) labels')
  ranks = _average_ranks(scores)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC points for the rule "anomalous if score >= threshold", one per distinct score.

  Args:
    scores: [N] anomaly scores, higher = more anomalous.
    labels: [N] 1 for anomalous, 0 for normal; both classes must occur.

  Returns:
    (fpr, tpr, thresholds), each [K + 1] for K distinct scores: thresholds decrease from +inf
    (nothing flagged, the (0, 0) point) through each distinct score to the lowest (everything
    flagged, the (1, 1) point). Unlike sklearn, collinear points are not dropped.
  """
  scores, labels = _scores_and_labels(scores, labels)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError('roc_curve needs both normal (0) and anomalous (1) labels')
  order = np.argsort(-scores, kind='mergesort')
  s, y = scores[order], labels[order]
  # Last index of each run of equal scores: flagging at that score flags the whole run.
  last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
  tp = np.cumsum(y)[last]
  fp = (last + 1) - tp
  fpr = np.r_[0.0, fp / n_neg]
  tpr = np.r_[0.0, tp / n_pos]
  thresholds = np.r_[np.inf, s[last]]
  return fpr, tpr, thresholds


def precision_recall_at(scores, labels, threshold: float) -> tuple[float, float]:
  """Precision and recall of flagging images whose score is strictly above `threshold`.

  Strictly above, so that with `percentile_threshold` at q = 95 about 5% of the training images
  are flagged. Precision is 0.0 when nothing is flagged, recall 0.0 when nothing is anomalous.

  Args:
    scores: [N] anomaly scores, higher = more anomalous.
    labels: [N] 1 for anomalous, 0 for normal.
    threshold: the decision threshold.

  Returns:
    (precision, recall), each in [0, 1].
  """
  scores, labels = _scores_and_labels(scores, labels)
  flagged = scores > threshold
  tp = int(np.sum(flagged & labels))
  precision = tp / int(flagged.sum()) if flagged.any() else 0.0
  recall = tp / int(labels.sum()) if labels.any() else 0.0
  return float(precision), float(recall)


def percentile_threshold(train_scores, q: float = 95.0) -> float:
  """The q-th percentile (linear interpolation) of scores on normal training images (S5: 95th).

  Args:
    train_scores: [N] anomaly scores, e.g. per-image reconstruction errors on the training split.
    q: percentile in [0, 100].

  Returns:
    The threshold; images scoring strictly above it are flagged (see `precision_recall_at`).
  """
  train_scores = np.asarray(train_scores, dtype=np.float64).reshape(-1)
  if train_scores.size == 0:
    raise ValueError('percentile_threshold needs at least one training score')
  if not 0.0 <= q <= 100.0:
    raise ValueError(f'percentile_threshold: q must be in [0, 100]; got {q}')
  return float(np.percentile(train_scores, q))
