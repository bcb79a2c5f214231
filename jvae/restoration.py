"""Compares restoration runs on the same distorted held-out images (S6's stage comparison).

  python -m jvae.restoration --like runs/<stage2> --workdirs runs/<a>,runs/<b>,... \
      [--names a,b,...] [--split test] [--checkpoint latest] [--seed 0]

Every run is evaluated with the data and distortion of the `--like` run (its data source, size,
channels, task and corruption), through the same compiled eval step as `jvae.evaluate`, with
noise from `--seed`. So a stage-1 run trained on clear images only is scored on the distorted
inputs stage 2 learns from, and all runs see exactly the same distorted images. Prints a markdown
table of SSIM, MSE, PSNR and histogram correlation of the restored and of the distorted images
(the baseline) against the clear ones, and writes `comparison.json` and `restorations.png`
(distorted | each run's restoration | clear) to `--out_dir` (default `<like>/eval/compare_<split>`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from jvae import cli, plotting, prng, runs, steps, trainer
from jvae.data import pipeline

# The fields that define what a restorer is asked to do; copied from the `like` run to every run.
TASK_FIELDS = ('task', 'corruption.kind', 'corruption.strength', 'data.source', 'data.image_size',
               'data.channels', 'data.value_range', 'data.holdout_fraction', 'seed')
TABLE_METRICS = ('ssim', 'mse', 'psnr', 'hist_corr')


def _get(config, field: str) -> Any:
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def compare_runs(workdirs: Sequence[str], like: str, names: Sequence[str] | None = None,
                 split: str | None = None, checkpoint: str | int = 'latest', seed: int = 0,
                 max_batches: int = 0, out_dir: str | None = None) -> dict[str, Any]:
  """Evaluates each run in `workdirs` on the task of the run in `like`; see the module doc.

  Returns:
    {'split', 'seed', 'like', 'task': {field: value}, 'runs': [{'name', 'workdir', 'step',
    'stage', 'metrics'}], 'figure'}; also written to `<out_dir>/comparison.json`.
  """
  names = list(names) if names else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(names) != len(workdirs):
    raise ValueError(f'{len(names)} names for {len(workdirs)} workdirs; give one per run')
  like_config = runs.load_config(like)
  split = split or like_config.data.eval_split
  task = {field: _get(like_config, field) for field in TASK_FIELDS}
  overrides = {**task, 'data.eval_split': split}
  # As jvae.evaluate, so the numbers agree.
  key = jax.random.fold_in(prng.root_key(seed, like_config), 1)
  results, rows, titles = [], [], []
  for name, workdir in zip(names, workdirs, strict=True):
    run = runs.load_run(workdir, checkpoint, config_overrides=overrides)
    metrics = trainer.evaluate(run.experiment, run.state, key, max_batches)
    results.append({'name': name, 'workdir': os.path.abspath(workdir), 'step': run.step,
                    'stage': run.config.train.stage, 'metrics': metrics})
    logging.info('%s (%s, step %d): %s', name, workdir, run.step,
                 {k: metrics[k] for k in TABLE_METRICS})
    inputs, target, restored = _restore_figure_images(run, key)
    if not rows:
      rows.append(pipeline.to_uint8(inputs, run.config.data.value_range))
      titles.append('distorted input')
    rows.append(pipeline.to_uint8(restored, run.config.data.value_range))
    titles.append(f'restored: {name} (step {run.step})')
  rows.append(pipeline.to_uint8(target, like_config.data.value_range))
  titles.append('clear')
  out_dir = out_dir or os.path.join(like, 'eval', f'compare_{split}')
  os.makedirs(out_dir, exist_ok=True)
  figure = plotting.save_rows(os.path.join(out_dir, 'restorations.png'), rows, titles)
  record = {'split': split, 'seed': seed, 'checkpoint': str(checkpoint),
            'like': os.path.abspath(like), 'task': task, 'runs': results, 'figure': figure}
  with open(os.path.join(out_dir, 'comparison.json'), 'w') as f:
    json.dump(record, f, indent=2)
  return record


def _restore_figure_images(run: runs.TrainedRun, key: jax.Array):
  """(distorted, clear, restored) [N, H, W, C] of the first figure images, as the trainer draws
  them (the same corruption key), with the posterior mean for VAEs."""
  config = run.config
  examples = trainer.first_eval_images(run.experiment, config.train.num_figure_images)
  batch = {k: jnp.asarray(v) for k, v in examples.items()}
  corruption_key, _ = jax.random.split(key)
  inputs, target, labels = steps.prepare_batch(batch, corruption_key, config, train=False)
  outputs = run.experiment.apply_fn(run.variables, inputs, labels, train=False, sample=False)
  return inputs, target, outputs['reconstruction']


def markdown_table(record: dict[str, Any]) -> str:
  """One row per run and a first row for the distorted inputs themselves (the baseline)."""
  header = ['model', 'step'] + [f'{m}' for m in TABLE_METRICS]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  first = record['runs'][0]['metrics']
  if f'input_{TABLE_METRICS[0]}' in first:
    values = [f'{first["input_" + m]:.4f}' for m in TABLE_METRICS]
    lines.append('| ' + ' | '.join(['distorted input (baseline)', '-'] + values) + ' |')
  for run in record['runs']:
    values = [f'{run["metrics"][m]:.4f}' for m in TABLE_METRICS]
    lines.append('| ' + ' | '.join([run['name'], str(run['step'])] + values) + ' |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_list('workdirs', None, 'Run directories to compare.')
  flags.DEFINE_string('like', None, 'The run whose data and distortion every run is scored on.')
  flags.DEFINE_list('names', None, 'A display name per workdir (default: directory names).')
  flags.DEFINE_string('split', None, "Split to evaluate; default: the like run's eval split.")
  flags.DEFINE_string('checkpoint', 'latest', "'best', 'latest' or a step number.")
  flags.DEFINE_integer('seed', 0, 'Seed of the distortions and latent noise drawn in evaluation.')
  flags.DEFINE_integer('max_batches', 0, 'Evaluate only this many batches (0 = all).')
  flags.DEFINE_string('out_dir', None, 'Where to write comparison.json and restorations.png.')
  flags.mark_flags_as_required(['workdirs', 'like'])


def main(argv):
  del argv
  cli.reuse_step_buffers_of(*FLAGS.workdirs)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    record = compare_runs(FLAGS.workdirs, FLAGS.like, FLAGS.names, FLAGS.split, checkpoint,
                          FLAGS.seed, FLAGS.max_batches, FLAGS.out_dir)
  print(markdown_table(record))
  print(f'\nwritten: {os.path.join(os.path.dirname(record["figure"]), "comparison.json")}, '
        f'{record["figure"]}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
