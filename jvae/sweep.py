"""Runs a config file's sweep: `python -m jvae.sweep --config configs/<x>_sweep.py --workdir DIR`.

A sweep config file has `get_config()` like any other and, flax-examples style, a function

  def sweep(add):
    for beta in (0.01, 0.1, 1.0):
      add(**{'loss.beta': beta})

Each `add` is one point: dotted config fields and their values. Every point trains with
`jvae.trainer.train_and_evaluate` into `<workdir>/<field>=<value>[,...]`, one after another.
Re-running the command resumes the sweep: a point whose final held-out metrics are on disk for
its full step budget is read back, not trained or evaluated again; an interrupted point resumes
from its newest checkpoint. Command-line
overrides (`--config.train.num_train_steps=300`) apply to every point. Then the final held-out
metrics of all points go to `<workdir>/sweep.csv` and `sweep.md`, and `rate_distortion.png`
draws distortion (the reconstruction term) against rate (the KL, nats per image) beside each
point's KL per latent dimension, sorted, where posterior collapse shows as dimensions at 0.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import runpy
import sys
from collections.abc import Callable
from typing import Any

import matplotlib
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

matplotlib.use('Agg')  # Headless: figures are files, never windows.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jvae import trainer  # noqa: E402
from jvae.checkpointing import CheckpointError  # noqa: E402
from jvae.config import ConfigError  # noqa: E402
from jvae.data.sources import DataError  # noqa: E402

# Final eval metrics in the table, after the swept fields: rate, distortion, then the rest.
TABLE_METRICS = ('kl', 'reconstruction', 'loss', 'elbo', 'active_units', 'psnr', 'ssim', 'sse')
# KL per dimension (nats, averaged over held-out images) below which a dimension counts as
# collapsed in the table's `collapsed_dims`.
COLLAPSED_KL = 0.01

TrainFn = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]


def sweep_points(sweep_fn: Callable[[Callable[..., None]], None]) -> list[dict[str, Any]]:
  """The points a `sweep(add)` function adds, in order: [{dotted field: value}, ...]."""
  points = []
  sweep_fn(lambda **overrides: points.append(dict(overrides)))
  if not points:
    raise ValueError('the sweep function added no points; call add(**{"loss.beta": 0.1}) per '
                     'point')
  return points


def point_name(overrides: dict[str, Any]) -> str:
  """A directory name for a point, e.g. {'loss.beta': 0.1} -> 'loss.beta=0.1'."""
  return ','.join(f'{field}={value}' for field, value in overrides.items()).replace('/', '_')


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields set; an unknown field raises ConfigError."""
  config = copy.deepcopy(config)
  for field, value in overrides.items():
    section, _, name = field.rpartition('.')
    target = config
    for part in filter(None, section.split('.')):
      if part not in target:
        raise ConfigError(f'sweep field {field!r} is not a config field')
      target = target[part]
    if name not in target:
      raise ConfigError(f'sweep field {field!r} is not a config field')
    with target.unlocked():
      target[name] = value
  return config


def run_sweep(config: ml_collections.ConfigDict, points: list[dict[str, Any]], workdir: str,
              train_fn: TrainFn = trainer.train_and_evaluate) -> list[dict[str, Any]]:
  """Trains every point and returns one table row per point (its fields and final metrics)."""
  rows = []
  for overrides in points:
    name = point_name(overrides)
    point_config = apply_overrides(config, overrides)
    point_dir = os.path.join(workdir, name)
    metrics = finished_metrics(point_config, point_dir)
    if metrics is None:
      logging.info('sweep point %s', name)
      metrics = train_fn(point_config, point_dir)
    else:
      logging.info('sweep point %s: finished earlier, metrics read back', name)
    kl_per_dim = np.asarray(metrics.get('kl_per_dim', []), np.float64)
    row = {'point': name, **overrides}
    row.update({k: metrics[k] for k in TABLE_METRICS if k in metrics})
    if kl_per_dim.size:
      row['collapsed_dims'] = int(np.sum(kl_per_dim < COLLAPSED_KL))
      row['kl_per_dim'] = kl_per_dim.tolist()
    rows.append(row)
  return rows


def finished_metrics(config: ml_collections.ConfigDict, point_dir: str) -> dict[str, Any] | None:
  """The final eval metrics of a point that trained its whole budget, else None."""
  path = os.path.join(point_dir, 'eval', config.data.eval_split, 'metrics.json')
  try:
    with open(path) as f:
      record = json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  if record.get('step', -1) < config.train.num_train_steps:
    return None  # a shorter earlier run, or an early stop: let the trainer decide
  return record['metrics']


def _columns(rows: list[dict[str, Any]]) -> list[str]:
  columns = []
  for row in rows:
    columns += [k for k in row if k not in columns and k != 'kl_per_dim']
  return columns


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def write_tables(rows: list[dict[str, Any]], workdir: str) -> tuple[str, str]:
  """Writes <workdir>/sweep.csv (full precision) and sweep.md; returns their paths."""
  columns = _columns(rows)
  csv_path = os.path.join(workdir, 'sweep.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  md_path = os.path.join(workdir, 'sweep.md')
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(_format(row.get(c, '')) for c in columns) + ' |' for row in rows]
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return csv_path, md_path


def plot_rate_distortion(rows: list[dict[str, Any]], path: str) -> str:
  """Distortion against rate, one labelled point per row, and each row's sorted KL per dim."""
  fig, (ax, ax_dims) = plt.subplots(1, 2, figsize=(10, 3.8))
  rates = [row['kl'] for row in rows]
  distortions = [row['reconstruction'] for row in rows]
  ax.plot(rates, distortions, 'o-')
  for row, x, y in zip(rows, rates, distortions):
    ax.annotate(row['point'], (x, y), textcoords='offset points', xytext=(4, 4), fontsize=7)
  ax.set_xlabel('rate: KL (nats per image)')
  ax.set_ylabel('distortion: reconstruction term')
  ax.set_title('rate-distortion (held-out)', fontsize=9)
  ax.grid(alpha=0.3)
  for row in rows:
    if row.get('kl_per_dim'):
      kl = np.sort(np.asarray(row['kl_per_dim']))[::-1]
      ax_dims.plot(np.arange(1, kl.size + 1), np.maximum(kl, 1e-6), label=row['point'])
  ax_dims.set_yscale('log')
  ax_dims.axhline(COLLAPSED_KL, color='k', linestyle='--', linewidth=0.8)
  ax_dims.set_xlabel('latent dimension (sorted by KL)')
  ax_dims.set_ylabel('KL per dimension (nats)')
  ax_dims.set_title(f'posterior collapse: dims below {COLLAPSED_KL} nats', fontsize=9)
  ax_dims.grid(alpha=0.3)
  if ax_dims.get_legend_handles_labels()[0]:
    ax_dims.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def sweep_and_report(config: ml_collections.ConfigDict, sweep_fn, workdir: str,
                     train_fn: TrainFn = trainer.train_and_evaluate) -> list[dict[str, Any]]:
  """Runs the sweep, writes the tables and the plot, and returns the rows."""
  os.makedirs(workdir, exist_ok=True)
  rows = run_sweep(config, sweep_points(sweep_fn), workdir, train_fn)
  write_tables(rows, workdir)
  if all('kl' in row for row in rows):
    plot_rate_distortion(rows, os.path.join(workdir, 'rate_distortion.png'))
  return rows


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'A sweep config file (with sweep(add)).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory of the sweep; each point gets a subdirectory.')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  path = config_flags.get_config_filename(FLAGS['config'])
  sweep_fn = runpy.run_path(path).get('sweep')
  if sweep_fn is None:
    print(f'error: {path} defines no sweep(add) function', file=sys.stderr)
    sys.exit(2)
  try:
    sweep_and_report(FLAGS.config, sweep_fn, FLAGS.workdir)
  except (ConfigError, DataError, CheckpointError, trainer.WorkdirInUseError,
          trainer.NonFiniteError) as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  with open(os.path.join(FLAGS.workdir, 'sweep.md')) as f:
    print(f.read())


if __name__ == '__main__':
  _define_flags()
  app.run(main)
