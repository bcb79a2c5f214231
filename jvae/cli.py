"""What every command-line tool of jvae shares: the --checkpoint value and exiting on bad input.

A user's mistake (a missing run, an unknown checkpoint, a wrong data source) ends the command
with its message on stderr and exit status 2, not a traceback; errors of jvae itself still raise.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from absl import logging

# ValueError covers ConfigError and DataError, which subclass it.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


def reuse_step_buffers_of(*workdirs: str) -> bool:
  """Applies the runs' `train.reuse_step_buffers` to a tool that reloads them, before it starts
  JAX: their eval steps allocate the same per-execution temporaries as the train step.

  Applied only when every run asks for it. A run whose config cannot be read is left to the
  tool, which reports it; then nothing is applied. Returns whether the setting took effect.
  """
  from jvae import host_memory, runs  # runs imports the trainer; cli is imported by everything

  try:
    wanted = all(bool(runs.load_config(workdir).train.reuse_step_buffers)
                 for workdir in workdirs)
  except (OSError, ValueError):
    return False
  return bool(workdirs) and wanted and host_memory.reuse_step_buffers()


def checkpoint_arg(value: str) -> str | int:
  """A --checkpoint flag value: 'best', 'latest' or a step number."""
  return int(value) if value.isdigit() else value


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
  """Turns the errors that bad input raises into a one-line message and exit status 2."""
  try:
    yield
  except USER_ERRORS as error:
    logging.error('%s', error)
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
