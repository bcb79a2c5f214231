"""S1 report: SAAAE figures and the VAE vs SAAAE table from finished runs.

  python -m jvae.reports.saaae --workdir runs/vae_cifar64 --workdir runs/saaae_cifar64 [...]

For each run, writes `<workdir>/figures/saaae_anchor.png`: held-out images, their masked inputs
(the same masks for every run, drawn from `--seed`), the posterior-mean reconstructions and, for
anchored runs, the anchor map and a_norm. Then prints a Markdown table of each run's held-out
metrics from `<workdir>/eval/<split>/metrics.json` (written by training and by
`python -m jvae.evaluate`), and a second one with the mean ± std over seeds of the runs whose
configs differ only in `seed` (`--nofigures` skips the figures).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from jvae import anchor_plots, cli, metric_writer, runs, steps, trainer
from jvae.data import pipeline

TABLE_METRICS = ('sse', 'input_sse', 'psnr', 'input_psnr', 'ssim', 'input_ssim', 'reconstruction',
                 'kl', 'loss', 'active_units')


def anchor_maps(anchor: nn.Module, anchor_params: Any, inputs: jax.Array) -> jax.Array:
  """Where the anchor looks: |d sum_d a_norm_d / d x|, summed over channels, image by image.

  Each image goes through the anchor alone (a batch of one), so the map of one image never
  depends on the others, whatever `model.anchor_normalization` is.

  Args:
    anchor: the unbound anchor module (`model.anchor` of a built VAE).
    anchor_params: its parameters (`params['anchor']`).
    inputs: [N, H, W, C] model inputs.

  Returns:
    [N, H, W] non-negative.
  """

  def total(x: jax.Array) -> jax.Array:
    return jnp.sum(anchor.apply({'params': anchor_params}, x[None])['anchor'])

  gradients = jax.vmap(jax.grad(total))(inputs)
  return jnp.sum(jnp.abs(gradients), axis=-1)


def anchor_figure(run: runs.TrainedRun, num_images: int = 8, seed: int = 0,
                  path: str | None = None) -> str:
  """Draws original | masked | reconstruction | anchor map for the run's first eval images."""
  experiment, config = run.experiment, run.config
  examples = trainer.first_eval_images(experiment, num_images)
  batch = {k: jnp.asarray(v) for k, v in examples.items()}
  inputs, target, labels = steps.prepare_batch(batch, jax.random.key(seed), config)
  outputs = experiment.apply_fn(run.variables, inputs, labels, train=False, sample=False)
  value_range = config.data.value_range
  maps = anchor = None
  model_anchor = getattr(experiment.model, 'anchor', None)
  # The constant-noise ablation has an anchor module without parameters or a map to draw.
  if model_anchor is not None and 'anchor' in run.state.params:
    maps = np.asarray(jax.jit(functools.partial(anchor_maps, model_anchor))(
        run.state.params['anchor'], inputs))
    anchor = np.asarray(outputs['anchor'])
  path = path or os.path.join(run.workdir, 'figures', 'saaae_anchor.png')
  title = (f'{os.path.basename(os.path.normpath(run.workdir))}: model.anchor='
           f'{config.model.anchor!r}, step {run.step}, held-out {config.data.eval_split!r}')
  return anchor_plots.save_anchor_figure(
      path, pipeline.to_uint8(target, value_range), pipeline.to_uint8(inputs, value_range),
      pipeline.to_uint8(outputs['reconstruction'], value_range), maps, anchor, title)


def metrics_table(workdirs: list[str]) -> str:
  """A Markdown table of the held-out metrics each run's eval/<split>/metrics.json holds."""
  header = ['run', 'anchor', 'step', 'split'] + list(TABLE_METRICS)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for workdir in workdirs:
    config, path, record = _held_out(workdir)
    if record is None:
      lines.append(f'| {workdir} | {config.model.anchor} | - | (no {path}) |')
      continue
    metrics = record['metrics']
    cells = [workdir, config.model.anchor, str(record['step']), record.get('split', '')]
    cells += [_format(metrics.get(name)) for name in TABLE_METRICS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _held_out(workdir: str) -> tuple[ml_collections.ConfigDict, str, dict | None]:
  """(config, path of the final eval metrics, their record or None before they exist)."""
  config = runs.load_config(workdir)
  path = os.path.join(workdir, 'eval', config.data.eval_split, 'metrics.json')
  if not os.path.exists(path):
    return config, path, None
  with open(path) as f:
    return config, path, json.load(f)


def _seed_groups(workdirs: list[str]) -> list[dict]:
  """Finished runs grouped by config with `seed` left out, in order of first appearance."""
  groups: dict[str, dict] = {}
  for workdir in workdirs:
    config, _, record = _held_out(workdir)
    if record is None:
      continue
    values = config.to_dict()
    seed = values.pop('seed')
    key = json.dumps(values, sort_keys=True, default=str)
    group = groups.setdefault(key, {'name': workdir, 'anchor': config.model.anchor,
                                    'steps': set(), 'seeds': [], 'metrics': [], 'workdirs': []})
    group['steps'].add(record['step'])
    group['seeds'].append(seed)
    group['metrics'].append(record['metrics'])
    group['workdirs'].append(workdir)
  return list(groups.values())


def _mean_spread(values: list[float]) -> str:
  if len(values) == 1:
    return _format(values[0])
  return f'{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}'


def seed_summary_table(workdirs: list[str]) -> str:
  """Mean and spread over seeds: runs whose configs differ only in `seed` form one row.

  Each row gives the mean and the sample standard deviation (n - 1) over its runs of every
  metric in TABLE_METRICS, as `mean ± std`, with the seeds it covers; a group of one run shows
  its value alone. Rows follow the order in which each group's first run appears.
  """
  header = ['first run', 'anchor', 'steps', 'seeds'] + list(TABLE_METRICS)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for group in _seed_groups(workdirs):
    cells = [group['name'], group['anchor'], ','.join(map(str, sorted(group['steps']))),
             ','.join(map(str, group['seeds']))]
    for name in TABLE_METRICS:
      values = [m[name] for m in group['metrics'] if name in m]
      cells.append(_mean_spread(values) if values else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def training_curves_table(workdirs: list[str], metric: str = 'loss') -> str:
  """The logged training `metric` (mean over each log window) per step, mean ± std over seeds.

  One column per group of `seed_summary_table`, one row per logged step: how fast each model
  gets where, the source's "converges faster" claim put to the test.
  """
  groups = _seed_groups(workdirs)
  curves = []
  for group in groups:
    per_run = [{r['step']: r[metric] for r in metric_writer.read_metrics(workdir)
                if r['split'] == 'train' and metric in r} for workdir in group['workdirs']]
    curves.append(per_run)
  steps_logged = sorted(set.intersection(*(set(c) for per_run in curves for c in per_run)))
  header = ['step'] + [f'{g["name"]} ({g["anchor"]})' for g in groups]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for step in steps_logged:
    cells = [str(step)] + [_mean_spread([c[step] for c in per_run]) for per_run in curves]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _format(value: Any) -> str:
  if value is None:
    return '-'
  if isinstance(value, int):
    return str(value)
  return f'{value:.4g}'


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_multi_string('workdir', None, 'A run directory written by train.py (repeatable).')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_integer('num_images', 8, 'Held-out images in the figure.')
  flags.DEFINE_integer('seed', 0, 'Seed of the masks drawn for the figure.')
  flags.DEFINE_string('curve_metric', 'loss', 'Training metric tabulated per logged step.')
  flags.DEFINE_boolean('figures', True, 'Draw each run\'s figure; --nofigures only tabulates.')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  cli.reuse_step_buffers_of(*FLAGS.workdir) if FLAGS.figures else None
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    for workdir in FLAGS.workdir if FLAGS.figures else ():
      run = runs.load_run(workdir, checkpoint)
      print(anchor_figure(run, FLAGS.num_images, FLAGS.seed))
  print(metrics_table(FLAGS.workdir))
  print()
  print(seed_summary_table(FLAGS.workdir))
  print()
  print(f'Training {FLAGS.curve_metric} (mean over each log window; mean ± std over seeds):')
  print(training_curves_table(FLAGS.workdir, FLAGS.curve_metric))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
