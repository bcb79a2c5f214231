"""One-class anomaly detection across held-out classes: the AUROC table of a one-class sweep.

  python -m jvae.sweep --config configs/mnist_one_class_ae.py --workdir runs/mnist_one_class
  python -m jvae.reports.one_class --workdir runs/mnist_one_class

Every run directory under `--workdir` whose config excludes exactly one class
(`data.exclude_labels=(k,)`) is scored by `jvae.anomaly.detect_anomalies`: threshold from its own
training images (the other classes), normal = its held-out split (the other classes), anomalies =
the held-out images of class k from the same source. Each run gets its own `eval/anomaly/`; the
table (one row per held-out class: AUROC, flag rates at the threshold, precision, recall) goes to
`<workdir>/one_class.csv` and `one_class.md`.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from absl import app, flags, logging

from jvae import anomaly, cli, runs

COLUMNS = ('held_out_class', 'auroc', 'normal_flagged', 'anomaly_flagged', 'precision', 'recall',
           'threshold', 'step', 'run')


def one_class_runs(workdir: str) -> list[tuple[int, str]]:
  """(held-out class, run directory) of every one-class run under `workdir`, by class."""
  found = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name)
    if not os.path.exists(os.path.join(path, 'config.json')):
      continue
    excluded = tuple(runs.load_config(path).data.exclude_labels)
    if len(excluded) == 1:
      found.append((int(excluded[0]), path))
  if not found:
    raise FileNotFoundError(f'{workdir!r} holds no run with exactly one data.exclude_labels '
                            'class; train them with python -m jvae.sweep --config '
                            'configs/mnist_one_class_ae.py')
  return sorted(found)


def one_class_report(workdir: str, percentile: float = 95.0, score: str = 'error',
                     checkpoint: str | int = 'latest') -> list[dict[str, Any]]:
  """Scores every one-class run under `workdir`; writes and returns the table rows."""
  rows = []
  for held_out, path in one_class_runs(workdir):
    source = runs.load_config(path).data.source
    record = anomaly.detect_anomalies(path, anomalies=source, percentile=percentile, score=score,
                                      checkpoint=checkpoint, anomaly_labels=(held_out,))
    rows.append({'held_out_class': held_out, 'auroc': record['auroc'],
                 'normal_flagged': record['normal']['flagged_fraction'],
                 'anomaly_flagged': record['anomalies']['flagged_fraction'],
                 'precision': record['precision'], 'recall': record['recall'],
                 'threshold': record['threshold'], 'step': record['step'],
                 'run': os.path.relpath(path, workdir)})
    logging.info('held-out class %d: AUROC %.4f', held_out, record['auroc'])
  with open(os.path.join(workdir, 'one_class.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(f'{row[c]:.4f}' if isinstance(row[c], float) else str(row[c])
                              for c in COLUMNS) + ' |' for row in rows]
  mean_auroc = sum(row['auroc'] for row in rows) / len(rows)
  lines.append(f'\nmean AUROC over {len(rows)} held-out classes: {mean_auroc:.4f}')
  with open(os.path.join(workdir, 'one_class.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return rows


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A sweep directory of one-class runs.')
  flags.DEFINE_float('percentile', 95.0, 'Threshold percentile of each run\'s train scores.')
  flags.DEFINE_enum('score', 'error', anomaly.SCORES, 'error: reconstruction loss; nelbo: VAEs.')
  flags.DEFINE_string('checkpoint', 'latest', "'best', 'latest' or a step number.")
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.reuse_step_buffers_of(FLAGS.workdir)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    one_class_report(FLAGS.workdir, FLAGS.percentile, FLAGS.score, checkpoint)
  with open(os.path.join(FLAGS.workdir, 'one_class.md')) as f:
    print(f.read())


if __name__ == '__main__':
  _define_flags()
  app.run(main)
