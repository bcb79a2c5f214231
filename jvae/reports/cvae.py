"""The S3 report of a conditional VAE: figures of its latent space and the conditional accuracy of
its samples, next to its held-out loss.

  python -m jvae.reports.cvae --workdir runs/mnist_cvae_onehot --classifier runs/mnist_classifier

Writes into `<workdir>/eval/<split>/`: `metrics.json` (from `jvae.evaluate.evaluate_run`),
`class_conditional_samples.png` (one row per class), `latent_scatter.png` (posterior means of the
split coloured by class), `latent_manifold.png` (the decoded 2-D latent grid of each class; only
for latent_dim 2) and `cvae_report.json`. Conditional accuracy is the fraction of
`--samples_per_class` prior samples per class that the classifier assigns to the requested class.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import app, flags

from jvae import classifier as classifier_lib
from jvae import cli, evaluate, generate, latent_plots, runs
from jvae.data import pipeline

GRID_COLUMNS = 10  # samples per class row in the class-conditional figure


def cvae_report(workdir: str, classifier_dir: str, checkpoint: str | int = 'latest',
                seed: int = 0, samples_per_class: int = 100, temperature: float = 1.0,
                grid_size: int = 15, span: float = 2.0) -> dict[str, Any]:
  """Figures and numbers of the conditional VAE in `workdir`; returns the cvae_report.json record.

  Args:
    workdir: a run of a conditioned VAE (model.conditioning 'onehot' or 'embedding').
    classifier_dir: a directory written by `python -m jvae.classifier`.
    checkpoint: 'latest' (default: 'best' is chosen by the eval-split loss, which is the split
      reported here), 'best' or a step.
    seed: seeds the evaluation noise and the prior samples.
    samples_per_class: prior samples per class for the conditional accuracy.
    temperature: scale of the prior draws.
    grid_size: side of each class's latent manifold.
    span: the manifold covers [-span, span]^2.
  """
  record = evaluate.evaluate_run(workdir, checkpoint=checkpoint, seed=seed)
  run = runs.load_run(workdir, checkpoint)
  config = run.config
  if config.model.conditioning == 'none':
    raise ValueError(f'{workdir!r} holds an unconditioned model; the CVAE report needs '
                     "model.conditioning 'onehot' or 'embedding'")
  num_classes = config.model.num_classes
  class_names = tuple(run.experiment.eval_source.info.class_names)
  out_dir = os.path.join(workdir, 'eval', config.data.eval_split)
  value_range = config.data.value_range

  requested = np.repeat(np.arange(num_classes, dtype=np.int32), samples_per_class)
  sample_key = jax.random.fold_in(jax.random.key(seed), 2)
  samples = np.asarray(generate.sample(run, None, sample_key, len(requested), requested,
                                       temperature))
  model, params, classifier_info = classifier_lib.load(classifier_dir)
  # The classifier reads [0, 1] images whatever range the VAE works in.
  unit = pipeline.to_float(pipeline.to_uint8(samples, value_range), 'unit')
  predicted = classifier_lib.predict(params, unit, model)
  accuracy = float(np.mean(predicted == requested))
  per_class = classifier_lib.accuracy_by_class(predicted, requested, num_classes)

  shown = samples.reshape(num_classes, samples_per_class, *samples.shape[1:])
  shown = shown[:, :min(GRID_COLUMNS, samples_per_class)].reshape(-1, *samples.shape[1:])
  figures = [latent_plots.save_class_grid(
      os.path.join(out_dir, 'class_conditional_samples.png'), pipeline.to_uint8(shown, value_range),
      num_classes, class_names,
      f'samples z ~ N(0, {temperature:g}^2 I), one row per requested class')]
  means, labels = generate.encode_split(run)
  figures.append(latent_plots.save_latent_scatter(
      os.path.join(out_dir, 'latent_scatter.png'), means, labels, class_names,
      f'posterior means of the {config.data.eval_split} split ({len(labels)} images)'))
  if config.model.latent_dim == 2:
    grids = {k: pipeline.to_uint8(generate.latent_grid(run, None, k, grid_size, span),
                                  value_range) for k in range(num_classes)}
    figures.append(latent_plots.save_manifolds(
        os.path.join(out_dir, 'latent_manifold.png'), grids, grid_size, span, class_names))

  metrics = record['metrics']
  report = {
      'workdir': os.path.abspath(workdir), 'split': record['split'],
      'checkpoint': record['checkpoint'], 'step': record['step'], 'seed': seed,
      'conditioning': config.model.conditioning,
      'test_loss_per_image': metrics['loss'],
      'test_reconstruction_per_image': metrics['reconstruction'],
      'test_kl_per_image': metrics['kl'],
      'conditional_accuracy': accuracy,
      'conditional_accuracy_by_class': per_class,
      'samples_per_class': samples_per_class, 'temperature': temperature,
      'classifier': {'directory': os.path.abspath(classifier_dir),
                     'eval_split': classifier_info.get('eval_split'),
                     'eval_accuracy': classifier_info.get('eval_accuracy')},
      'figures': [os.path.relpath(p, workdir) for p in figures],
  }
  with open(os.path.join(out_dir, 'cvae_report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  return report


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A run of a conditional VAE written by train.py.')
  flags.DEFINE_string('classifier', None, 'A directory written by python -m jvae.classifier.')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
  flags.DEFINE_integer('seed', 0, 'Seed of the evaluation noise and the prior samples.')
  flags.DEFINE_integer('samples_per_class', 100, 'Prior samples per class.')
  flags.DEFINE_float('temperature', 1.0, 'Scale of the prior draws.')
  flags.DEFINE_integer('grid_size', 15, 'Side of each class manifold.')
  flags.DEFINE_float('span', 2.0, 'The manifold covers [-span, span]^2.')
  flags.mark_flags_as_required(['workdir', 'classifier'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.reuse_step_buffers_of(FLAGS.workdir)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    report = cvae_report(FLAGS.workdir, FLAGS.classifier, checkpoint, FLAGS.seed,
                         FLAGS.samples_per_class, FLAGS.temperature, FLAGS.grid_size, FLAGS.span)
  print(json.dumps({k: v for k, v in report.items() if k != 'conditional_accuracy_by_class'},
                   indent=2))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
