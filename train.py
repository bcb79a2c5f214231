"""Trains and evaluates a jvae model: `python train.py --config configs/<name>.py --workdir DIR`.

Only flags live here; everything else is the library's (`jvae.trainer.train_and_evaluate`).
Override any config field with `--config.<field>=<value>`, e.g. `--config.train.batch_size=32`.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jvae import distributed, host_memory, trainer
from jvae.checkpointing import CheckpointError
from jvae.config import ConfigError
from jvae.data.sources import DataError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A config file in configs/.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory of the run: checkpoints, logs, figures.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of Orbax and grain (every file renamed per save) from the log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ('/orbax/', '/grain/', '/tensorstore/'))
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Before distributed.initialize, which starts JAX.
  host_memory.apply_reuse_step_buffers(FLAGS.config)
  distributed.initialize(FLAGS.config)
  try:
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, DataError, CheckpointError, trainer.WorkdirInUseError,
          trainer.NonFiniteError) as error:
    logging.error('%s', error)
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
