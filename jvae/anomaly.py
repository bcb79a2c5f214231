"""Anomaly detection by reconstruction error (S5): `python -m jvae.anomaly --workdir runs/<name>`.

A model trained on normal images only reconstructs unusual images worse. Each image gets a score,
higher = more anomalous:

  error  the run's own reconstruction loss per image (`loss.reconstruction`, summed over pixels:
         squared error for mse, absolute error for l1, cross-entropy for bernoulli), of the
         deterministic reconstruction: the AE's, or the VAE's decoded posterior mean z = mu.
  nelbo  VAEs only: that reconstruction term plus KL(q(z|x) || N(0, I)) with beta = 1, i.e. the
         negative ELBO evaluated at the posterior mean instead of a sampled z.

Images are scored clean, as they come from the source (a denoising model is not fed noise), with
BatchNorm's running averages and without dropout. The threshold is the `--percentile` (95 by
default) of the scores of the run's TRAIN split; an image is flagged when its score is strictly
above it. Given an anomaly set (`--anomalies`, any data source; its images are resized and
converted to the run's image shape exactly like the training data), the run's held-out split is
the normal class (label 0), the anomaly set the anomalous one (label 1), and AUROC and the
precision and recall of the flags are reported.

Writes `<workdir>/eval/anomaly/`: metrics.json, scores.csv (one row per scored image),
histogram.png (scores of normal and anomalous images, threshold marked), roc.png and
examples.png (images and their reconstructions).
"""

from __future__ import annotations

import copy
import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jvae import (
  anomaly_plots,
  cli,
  distributions,
  embed,
  losses,
  metrics,
  parallel,
  plotting,
  runs,
  trainer,
)
from jvae.data import pipeline, sources

SCORES = ('error', 'nelbo')
SCORE_DESCRIPTIONS = {
    'error': 'per-image reconstruction loss (loss.reconstruction, summed over pixels) of the '
             'deterministic reconstruction (VAEs: decoded posterior mean)',
    'nelbo': 'per-image negative ELBO at the posterior mean: reconstruction loss of the decoded '
             'mu plus KL(q(z|x) || N(0, I)), beta = 1',
}
NUM_EXAMPLE_IMAGES = 8


def score_fn(run: runs.TrainedRun, score: str = 'error'
             ) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
  """The jitted `(variables, images uint8 [B, H, W, C], labels [B]) -> scores float32 [B]`."""
  config = run.config
  if score not in SCORES:
    raise ValueError(f'score {score!r}; allowed: {", ".join(SCORES)}')
  if score == 'nelbo' and config.model.kind != 'vae':
    raise ValueError("score 'nelbo' needs a VAE (model.kind='vae'); this run is an "
                     f"{config.model.kind!r}: use score 'error'")
  conditioned = config.model.conditioning != 'none'
  model = run.experiment.model

  def scores(variables: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    x = pipeline.to_float(images, config.data.value_range)
    outputs = model.apply(variables, x, labels if conditioned else None, train=False,
                          sample=False)
    value = losses.reconstruction_nll(config.loss.reconstruction, outputs['logits'],
                                      outputs['reconstruction'], x, config.loss.gaussian_sigma)
    if score == 'nelbo':
      # The plain Gaussian KL: anchor KL weights shape the training loss, not the ELBO.
      value = value + distributions.gaussian_kl(outputs['mu'], outputs['logvar'])
    return value

  return jax.jit(scores, compiler_options=trainer.compiler_options(config))


def _array_batches(run: runs.TrainedRun, images: np.ndarray, labels: np.ndarray | None,
                   batch_size: int) -> Iterable[dict]:
  """Padded batches of in-memory images, sharded over the run's mesh like `embed.batches`."""
  batch_size = embed.checked_batch_size(run, batch_size)
  labels = np.full(len(images), -1, np.int32) if labels is None else np.asarray(labels, np.int32)
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    batch = {'image': np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)]),
             'label': np.concatenate([labels[start:start + batch_size],
                                      np.zeros(pad, np.int32)]),
             'mask': np.r_[np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)]}
    yield parallel.global_batch(batch, run.experiment.mesh)


def _score_batches(run: runs.TrainedRun, batches: Iterable[dict], fn: Callable) -> np.ndarray:
  variables = run.variables
  out = [np.asarray(fn(variables, b['image'], b['label']))[np.asarray(b['mask']) > 0]
         for b in batches]
  return np.concatenate(out).astype(np.float64) if out else np.zeros(0, np.float64)


def reconstruction_errors(run: runs.TrainedRun, images_uint8: np.ndarray,
                          labels: np.ndarray | None = None, score: str = 'error',
                          batch_size: int = 0) -> np.ndarray:
  """Per-image anomaly scores of in-memory images.

  Args:
    run: from `jvae.runs.load_run`.
    images_uint8: uint8 [N, H, W, C] in [0, 255], already of the run's image shape.
    labels: int [N] class labels, needed only by label-conditioned models.
    score: 'error' or 'nelbo' (see the module doc).
    batch_size: images per compiled call; 0 takes the run's `train.eval_batch_size`.

  Returns:
    float64 [N], higher = more anomalous.
  """
  images_uint8 = np.asarray(images_uint8)
  if images_uint8.dtype != np.uint8 or images_uint8.shape[1:] != tuple(
      run.experiment.image_shape):
    raise ValueError(f'expected uint8 images [N, {", ".join(map(str, run.experiment.image_shape))}]'
                     f'; got {images_uint8.dtype} {images_uint8.shape}')
  return _score_batches(run, _array_batches(run, images_uint8, labels, batch_size),
                        score_fn(run, score))


def source_scores(run: runs.TrainedRun, source, score: str = 'error',
                  batch_size: int = 0) -> np.ndarray:
  """Per-image anomaly scores of every record of an image source, in order: float64 [N]."""
  return _score_batches(run, embed.batches(run, source, batch_size), score_fn(run, score))


def open_anomaly_source(run: runs.TrainedRun, source: str, split: str,
                        labels: Sequence[int] = ()) -> sources.ImageSource:
  """Opens `source` (any `data.source` string) with the run's data settings and image shape.

  `labels`, if given, keeps only those classes of it: the held-out digit of a one-class run. The
  run's own `data.exclude_labels` is not applied here (it names exactly the anomalies).
  """
  height, width, channels = run.experiment.image_shape
  if height != width:
    raise ValueError(f'the model takes {height}x{width} images; anomaly sources are resized to '
                     'squares only')
  data = copy.deepcopy(run.config.data)
  data.source = source
  data.image_size = height
  data.channels = channels
  data.exclude_labels = ()
  return sources.select_labels(sources.open_source(data, split, run.config.seed), include=labels)


def _summary(split: str, scores: np.ndarray, threshold: float) -> dict[str, Any]:
  flagged = int(np.sum(scores > threshold))
  return {'split': split, 'count': int(scores.size), 'flagged': flagged,
          'flagged_fraction': flagged / max(scores.size, 1),
          'score_mean': float(np.mean(scores)), 'score_median': float(np.median(scores))}


def _reconstruct(run: runs.TrainedRun, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  config = run.config
  x = pipeline.to_float(jnp.asarray(images), config.data.value_range)
  labels = jnp.asarray(labels) if config.model.conditioning != 'none' else None
  outputs = run.experiment.apply_fn(run.variables, x, labels, train=False, sample=False)
  return pipeline.to_uint8(outputs['reconstruction'], config.data.value_range)


def _write_scores_csv(path: str, sets: list[tuple[str, str, Any, np.ndarray, int | None]],
                      threshold: float) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['set', 'split', 'index', 'label', 'score', 'flagged', 'is_anomaly', 'path'])
    for name, split, source, scores, is_anomaly in sets:
      paths = getattr(source, 'paths', None)
      labels = source.labels()
      for index, value in enumerate(scores):
        writer.writerow([name, split, index, int(labels[index]), repr(float(value)),
                         int(value > threshold), '' if is_anomaly is None else is_anomaly,
                         paths[index] if paths is not None else ''])


def detect_anomalies(workdir: str, anomalies: str | None = None, anomaly_split: str = 'test',
                     percentile: float = 95.0, score: str = 'error',
                     checkpoint: str | int = 'best', normal_split: str | None = None,
                     train_split: str | None = None, batch_size: int = 0,
                     output_dir: str | None = None, figures: bool = True,
                     anomaly_labels: Sequence[int] = ()) -> dict[str, Any]:
  """Scores the train split, the held-out split and an optional anomaly set; writes the results.

  Args:
    workdir: a run directory written by `train.py`.
    anomalies: a `data.source` string for the anomalous images (e.g.
      'npz:../shared/data/cifar10_32_subset.npz'), or None to only threshold and flag.
    anomaly_split: the split of `anomalies` to read.
    percentile: the threshold is this percentile of the train split's scores.
    score: 'error' or 'nelbo' (see the module doc).
    checkpoint: 'best', 'latest' or a step.
    normal_split: the normal held-out images; default the run's eval split.
    train_split: the images the threshold comes from; default the run's train split.
    batch_size: images per compiled call; 0 takes the run's `train.eval_batch_size`.
    output_dir: default `<workdir>/eval/anomaly`.
    figures: write histogram.png, roc.png and examples.png.
    anomaly_labels: keep only these classes of `anomalies` (default all).

  Returns:
    The record written to metrics.json.
  """
  if not 0.0 <= percentile <= 100.0:
    raise ValueError(f'percentile must be in [0, 100]; got {percentile}')
  run = runs.load_run(workdir, checkpoint, open_data=False)
  config = run.config
  fn = score_fn(run, score)  # Rejects a bad score before any data is read.
  train_split = train_split or config.data.train_split
  normal_split = normal_split or config.data.eval_split
  train_source = embed.open_split(run, train_split)
  normal_source = embed.open_split(run, normal_split)
  anomaly_source = (open_anomaly_source(run, anomalies, anomaly_split, anomaly_labels)
                    if anomalies else None)


  def scores_of(source) -> np.ndarray:
    return _score_batches(run, embed.batches(run, source, batch_size), fn)

  train_scores = scores_of(train_source)
  normal_scores = scores_of(normal_source)
  threshold = metrics.percentile_threshold(train_scores, percentile)
  record: dict[str, Any] = {
      'workdir': os.path.abspath(workdir), 'checkpoint': run.checkpoint, 'step': run.step,
      'seed': config.seed, 'score': score, 'score_description': SCORE_DESCRIPTIONS[score],
      'percentile': percentile, 'threshold': threshold,
      'train': _summary(train_split, train_scores, threshold),
      'normal': _summary(normal_split, normal_scores, threshold)}
  sets = [('train', train_split, train_source, train_scores, None),
          ('normal', normal_split, normal_source, normal_scores, 0)]
  roc = anomaly_scores = None
  if anomaly_source is not None:
    anomaly_scores = scores_of(anomaly_source)
    record['anomalies'] = {'source': anomalies, 'labels': list(anomaly_labels),
                           **_summary(anomaly_split, anomaly_scores, threshold)}
    all_scores = np.r_[normal_scores, anomaly_scores]
    labels = np.r_[np.zeros(normal_scores.size, int), np.ones(anomaly_scores.size, int)]
    precision, recall = metrics.precision_recall_at(all_scores, labels, threshold)
    record.update(auroc=metrics.roc_auc(all_scores, labels), precision=precision, recall=recall)
    roc = metrics.roc_curve(all_scores, labels)
    sets.append(('anomaly', anomaly_split, anomaly_source, anomaly_scores, 1))

  output_dir = output_dir or os.path.join(workdir, 'eval', 'anomaly')
  os.makedirs(output_dir, exist_ok=True)
  _write_scores_csv(os.path.join(output_dir, 'scores.csv'), sets, threshold)
  paths = []
  if figures:
    paths.append(anomaly_plots.save_score_histogram(
        os.path.join(output_dir, 'histogram.png'), normal_scores, anomaly_scores, threshold,
        f'{score} (normal: {normal_split}; threshold: p{percentile:g} of {train_split})',
        train_scores))
    if roc is not None:
      fpr, tpr, _ = roc
      at = (record['normal']['flagged_fraction'], record['recall'])
      paths.append(anomaly_plots.save_roc_curve(os.path.join(output_dir, 'roc.png'), fpr, tpr,
                                                record['auroc'], at, f'p{percentile:g}'))
    rows, titles = [], []
    for name, _, source, _, _ in sets[1:]:
      examples = source.read_batch(np.arange(min(NUM_EXAMPLE_IMAGES, len(source))))
      rows += [examples['image'], _reconstruct(run, examples['image'], examples['label'])]
      titles += [f'{name}: {source.name}', f'{name}: reconstruction']
    if len({len(r) for r in rows}) == 1:  # save_rows lays every row out at one width
      paths.append(plotting.save_rows(os.path.join(output_dir, 'examples.png'), rows, titles))
  record['figures'] = [os.path.relpath(p, workdir) for p in paths]
  with open(os.path.join(output_dir, 'metrics.json'), 'w') as f:
    json.dump(record, f, indent=2)
  return record


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A run directory written by train.py.')
  flags.DEFINE_string('anomalies', None, 'A data source of anomalous images, e.g. '
                      'npz:../shared/data/cifar10_32_subset.npz; omit to only flag images.')
  flags.DEFINE_string('anomaly_split', 'test', 'The split of --anomalies to read.')
  flags.DEFINE_list('anomaly_labels', [], 'Keep only these class ids of --anomalies, e.g. 3 '
                    '(one-class MNIST); default every image.')
  flags.DEFINE_float('percentile', 95.0, 'Threshold percentile of the train split scores.')
  flags.DEFINE_enum('score', 'error', SCORES, 'error: reconstruction loss; nelbo: VAEs only.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_string('normal_split', None, "Normal held-out split; default the config's eval "
                      'split.')
  flags.DEFINE_string('train_split', None, "Split the threshold comes from; default the config's "
                      'train split.')
  flags.DEFINE_integer('batch_size', 0, "Images per batch; 0 = the run's train.eval_batch_size.")
  flags.DEFINE_string('output_dir', None, 'Default: <workdir>/eval/anomaly.')
  flags.mark_flags_as_required(['workdir'])


def _class_ids(values: list[str]) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--anomaly_labels must be class ids (ints), got {values}') from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.reuse_step_buffers_of(FLAGS.workdir)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    record = detect_anomalies(FLAGS.workdir, FLAGS.anomalies, FLAGS.anomaly_split,
                              FLAGS.percentile, FLAGS.score, checkpoint, FLAGS.normal_split,
                              FLAGS.train_split, FLAGS.batch_size, FLAGS.output_dir,
                              anomaly_labels=_class_ids(FLAGS.anomaly_labels))
  keys = ('checkpoint', 'step', 'score', 'percentile', 'threshold', 'train', 'normal',
          'anomalies', 'auroc', 'precision', 'recall')
  print(json.dumps({k: record[k] for k in keys if k in record}, indent=2))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
