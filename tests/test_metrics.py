"""Tests for jvae.metrics against closed forms, numpy references and scikit-learn.

Image metrics run under `jax.jit` on numpy inputs (eager jnp ops would each compile a program).
"""

from __future__ import annotations

import functools

import dm_pix as pix
import jax
import numpy as np
import pytest

from jvae import metrics

SHAPE = (3, 12, 12, 3)


@functools.cache
def _jitted(name: str, **kwargs):
  return jax.jit(functools.partial(getattr(metrics, name), **kwargs))


def run(name: str, a: np.ndarray, b: np.ndarray, **kwargs) -> np.ndarray:
  return np.asarray(_jitted(name, **kwargs)(a, b))


def _images(seed: int = 0, shape=SHAPE) -> np.ndarray:
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def test_error_sums_and_means_known_values():
  a = np.zeros(SHAPE, np.float32)
  b = np.zeros(SHAPE, np.float32)
  b[0, 0, 0, 0] = 3.0
  b[1] = 0.5
  np.testing.assert_allclose(run('sum_squared_error', a, b), [9.0, 0.25 * 432, 0.0])
  np.testing.assert_allclose(run('mean_squared_error', a, b), [9.0 / 432, 0.25, 0.0])
  np.testing.assert_allclose(run('mean_absolute_error', a, b), [3.0 / 432, 0.5, 0.0])


def test_psnr_closed_form_and_identical_images():
  a = _images()
  b = a.copy()
  b[0] += 0.1  # MSE 0.01
  b[1] += 0.2  # MSE 0.04
  out = run('psnr', a, b, max_value=2.0)
  np.testing.assert_allclose(out[:2], [10 * np.log10(4 / 0.01), 10 * np.log10(4 / 0.04)],
                             rtol=1e-4)
  assert out[2] == np.inf  # the third pair is identical
  np.testing.assert_allclose(run('psnr', a, b)[0], 20.0, rtol=1e-4)  # max 1, MSE 0.01


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
  a = _images()
  noise = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
  scales = np.array([0.0, 0.05, 0.3], np.float32)[:, None, None, None]
  b = np.clip(a + scales * noise, 0, 1)
  out = run('ssim', a, b)  # 12 px: the default 11x11 window fits
  np.testing.assert_allclose(out[0], 1.0, atol=1e-6)
  assert out[0] > out[1] > out[2]
  small = run('ssim', a[:, :8, :8], a[:, :8, :8])  # 8 px: the window shrinks to 8x8
  np.testing.assert_allclose(small, 1.0, atol=1e-6)


@pytest.mark.parametrize('side', [12, 8])
def test_ssim_equals_dm_pix_default_window(side):
  a = _images(0)[:, :side, :side]
  b = np.clip(a + 0.2 * _images(1)[:, :side, :side] - 0.1, 0, 1)
  size = min(11, side)
  reference = jax.jit(functools.partial(pix.ssim, max_val=1.0, filter_size=size,
                                        filter_sigma=1.5 * size / 11))(a, b)
  np.testing.assert_allclose(run('ssim', a, b), reference, atol=1e-6)


def test_ssim_rejects_a_window_larger_than_the_image():
  with pytest.raises(ValueError, match='filter_size 13'):
    metrics.ssim(_images(), _images(), filter_size=13)


def test_histogram_correlation_matches_numpy_reference():
  a = _images(0)
  b = np.clip(a + 0.1 * _images(1) - 0.05, 0, 1)
  out = run('histogram_correlation', a, b, bins=16)
  expected = np.zeros(SHAPE[0])
  for i in range(SHAPE[0]):
    per_channel = []
    for c in range(SHAPE[3]):
      ha, _ = np.histogram(a[i, ..., c], bins=16, range=(0, 1))
      hb, _ = np.histogram(b[i, ..., c], bins=16, range=(0, 1))
      per_channel.append(np.corrcoef(ha, hb)[0, 1])
    expected[i] = np.mean(per_channel)
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_histogram_correlation_identical_and_degenerate():
  a = _images()
  np.testing.assert_allclose(run('histogram_correlation', a, a, bins=16), 1.0, rtol=1e-6)
  # Exactly 9 pixels in each of 16 bins: a flat histogram, zero variance over bins.
  flat = np.broadcast_to((np.arange(144) % 16 + 0.5) / 16, (1, 144)).reshape(1, 12, 12, 1)
  flat = np.tile(flat, (3, 1, 1, 3)).astype(np.float32)
  same = run('histogram_correlation', flat, flat, bins=16)
  np.testing.assert_array_equal(same, 1.0)
  different = run('histogram_correlation', flat, a, bins=16)
  np.testing.assert_array_equal(different, 0.0)


def _tied_scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  scores = np.round(rng.normal(size=n) + labels, 1)  # rounding makes many ties
  assert len(np.unique(scores)) < n
  return scores, labels


def test_roc_auc_matches_pairwise_definition_with_ties():
  scores, labels = _tied_scores(0, 200)
  pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
  expected = np.mean((pos > neg) + 0.5 * (pos == neg))
  np.testing.assert_allclose(metrics.roc_auc(scores, labels), expected, rtol=1e-12)


def test_roc_auc_matches_sklearn_with_ties():
  sk_metrics = pytest.importorskip('sklearn.metrics')
  scores, labels = _tied_scores(0, 200)
  np.testing.assert_allclose(metrics.roc_auc(scores, labels),
                             sk_metrics.roc_auc_score(labels, scores), rtol=1e-12)


def test_roc_auc_perfect_and_inverted_separation():
  labels = np.array([0, 0, 0, 1, 1])
  assert metrics.roc_auc([0.1, 0.2, 0.3, 0.8, 0.9], labels) == 1.0
  assert metrics.roc_auc([0.9, 0.8, 0.7, 0.2, 0.1], labels) == 0.0
  assert metrics.roc_auc([0.5] * 5, labels) == 0.5
  with pytest.raises(ValueError, match='both'):
    metrics.roc_auc([0.1, 0.2], [0, 0])


def test_roc_curve_matches_sklearn():
  sk_metrics = pytest.importorskip('sklearn.metrics')
  scores, labels = _tied_scores(1, 100)
  fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
  assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
  assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)
  np.testing.assert_allclose(np.trapezoid(tpr, fpr), sk_metrics.roc_auc_score(labels, scores))
  sk_fpr, sk_tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr)
  np.testing.assert_allclose(tpr, sk_tpr)


def test_threshold_and_precision_recall():
  train = np.arange(1, 101, dtype=np.float64)  # 1..100
  threshold = metrics.percentile_threshold(train, 95)
  np.testing.assert_allclose(threshold, np.percentile(train, 95))
  assert np.mean(train > threshold) == pytest.approx(0.05)
  scores = [0.1, 0.2, 0.9, 0.95, 0.3]
  labels = [0, 0, 1, 0, 1]
  precision, recall = metrics.precision_recall_at(scores, labels, 0.5)
  assert (precision, recall) == (0.5, 0.5)
  assert metrics.precision_recall_at(scores, labels, 1.0) == (0.0, 0.0)
