"""Evaluates a trained run on a held-out split: `python -m jvae.evaluate --workdir runs/<name>`.

Writes `<workdir>/eval/<split>/metrics.json` and figures beside it. The numbers come from the
same compiled eval step the trainer uses, over every example of the split exactly once, with
noise drawn from `--seed`: the same checkpoint, split and seed give the same numbers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jvae import (
    cli,
    embed,
    explore,
    latent_plots,
    likelihood,
    parallel,
    prng,
    runs,
    steps,
    trainer,
)
from jvae.data import pipeline


def iwae_metrics(run: runs.TrainedRun, key: jax.Array, num_samples: int, chunk_size: int,
                 max_batches: int = 0) -> dict[str, float]:
  """The IWAE bound on the run's eval split: mean NLL (nats per image) and bits/dim."""
  config, experiment = run.config, run.experiment
  model = experiment.model

  @jax.jit
  def batch_log_likelihood(variables, batch, key):
    inputs, target, labels = steps.prepare_batch(batch, key, config, train=False)
    return likelihood.iwae_log_likelihood(model, variables, inputs, target, labels, key,
                                          num_samples, chunk_size, config.loss)

  total, count = 0.0, 0.0
  batches = pipeline.eval_batches(experiment.eval_source, config.data,
                                  config.train.eval_batch_size, max_batches)
  for index, batch in enumerate(batches):
    log_p = batch_log_likelihood(run.variables, parallel.global_batch(batch, experiment.mesh),
                                 jax.random.fold_in(key, index))
    total += float(jnp.sum(jnp.where(batch['mask'] > 0, -log_p, 0.0)))
    count += float(np.sum(batch['mask']))
  nll = total / count
  return {'iwae_nll': nll, 'iwae_samples': num_samples, 'iwae_images': int(count),
          'iwae_bits_per_dim': likelihood.bits_per_dim(
              nll, int(np.prod(experiment.image_shape)), config.loss.reconstruction,
              pipeline.value_bounds(config.data.value_range))}


# Colouring by label only reads for a handful of classes (digits, CIFAR-10), not LFW's 5749 people.
MAX_SCATTER_CLASSES = 20


def latent_scatter_figure(run: runs.TrainedRun, split: str, out_dir: str) -> list[str]:
  """The codes of `split` (VAEs: posterior means) coloured by label: z[0], z[1] for 2-D latents,
  else their first two principal components. [] for unlabeled or many-class sources."""
  num_classes = run.experiment.eval_source.info.num_classes
  if not 0 < num_classes <= MAX_SCATTER_CLASSES:
    return []
  codes = embed.encode_split(run, split)
  return [latent_plots.save_latent_scatter(
      os.path.join(out_dir, 'latent_scatter.png'), codes['codes'], codes['labels'],
      run.experiment.eval_source.info.class_names,
      f'codes of the {split} split ({len(codes["labels"])} images)')]


def evaluate_run(workdir: str, split: str | None = None, checkpoint: str | int = 'best',
                 seed: int = 0, max_batches: int = 0, figures: bool = True,
                 iwae_samples: int = 0, iwae_chunk: int = 100,
                 iwae_max_batches: int = 0) -> dict[str, Any]:
  """Metrics of the run's checkpoint on `split` (default: the config's eval split).

  With `iwae_samples` > 0 also the IWAE bound with that many samples per image, over the first
  `iwae_max_batches` eval batches (0 = all).
  """
  overrides = {'data.eval_split': split} if split else None
  run = runs.load_run(workdir, checkpoint, config_overrides=overrides)
  split = run.config.data.eval_split
  key = jax.random.fold_in(prng.root_key(seed, run.config), 1)
  metrics = trainer.evaluate(run.experiment, run.state, key, max_batches)
  if iwae_samples > 0:
    metrics.update(iwae_metrics(run, jax.random.fold_in(key, 2), iwae_samples,
                                min(iwae_chunk, iwae_samples), iwae_max_batches))
  out_dir = os.path.join(workdir, 'eval', split)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  if figures:
    paths = trainer.write_figures(run.experiment, run.state, key, out_dir)
    paths += explore.write_latent_figures(run, key, os.path.join(out_dir, 'figures'),
                                          metrics.get('kl_per_dim'))
    paths += latent_scatter_figure(run, split, os.path.join(out_dir, 'figures'))
  record = {'workdir': os.path.abspath(workdir), 'split': split, 'checkpoint': run.checkpoint,
            'step': run.step, 'seed': seed, 'metrics': metrics,
            'figures': [os.path.relpath(p, workdir) for p in paths]}
  with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
    json.dump(record, f, indent=2)
  return record


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A run directory written by train.py.')
  flags.DEFINE_string('split', None, 'Split to evaluate; default: the config\'s eval split.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_integer('seed', 0, 'Seed of the noise drawn during evaluation.')
  flags.DEFINE_integer('max_batches', 0, 'Evaluate only this many batches (0 = all).')
  flags.DEFINE_integer('iwae_samples', 0, 'Samples K of the IWAE bound per image (0 = off).')
  flags.DEFINE_integer('iwae_chunk', 100, 'Samples per image drawn and decoded at a time for '
                       'IWAE; memory grows with train.eval_batch_size times this (128 x 500 '
                       'MNIST decodes needed 26 GB, 128 x 40 fits in a few).')
  flags.DEFINE_integer('iwae_max_batches', 0, 'IWAE over only this many eval batches (0 = all).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  cli.reuse_step_buffers_of(FLAGS.workdir)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    record = evaluate_run(FLAGS.workdir, FLAGS.split, checkpoint, FLAGS.seed, FLAGS.max_batches,
                          iwae_samples=FLAGS.iwae_samples, iwae_chunk=FLAGS.iwae_chunk,
                          iwae_max_batches=FLAGS.iwae_max_batches)
  scalars = {k: v for k, v in record['metrics'].items() if not isinstance(v, list)}
  print(json.dumps({'split': record['split'], 'step': record['step'],
                    'checkpoint': record['checkpoint'], **scalars}, indent=2))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
