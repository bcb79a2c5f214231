"""Orbax checkpoints of a run: the latest N by step, and the best by an eval metric, apart.

A checkpoint holds the train state (parameters, optimizer state, batch statistics, step), the
run's PRNG key, the data iterator's state and the config, so a restart continues the same run.
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jvae import prng


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used with this config; the message names what does not fit."""


def _manager(directory: str, max_to_keep: int, **options) -> ocp.CheckpointManager:
  # Declaring the item handlers lets a fresh manager read metadata before any save.
  handlers = {'state': ocp.StandardCheckpointHandler(), 'rng': ocp.StandardCheckpointHandler(),
              'data_iterator': ocp.JsonCheckpointHandler(),
              'config': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(
      directory, item_handlers=handlers,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False, **options))


class RunCheckpoints:
  """The checkpoints of one workdir: `<workdir>/checkpoints` (latest) and `<workdir>/best`."""

  def __init__(self, workdir: str, keep: int, best_metric: str, best_mode: str):
    self.best_metric = best_metric
    self.quarantine_dir = os.path.join(os.path.abspath(workdir), 'corrupt_checkpoints')
    self.latest = _manager(os.path.join(os.path.abspath(workdir), 'checkpoints'), keep)
    self.best = _manager(os.path.join(os.path.abspath(workdir), 'best'), 1,
                         best_fn=lambda m: m[best_metric], best_mode=best_mode)

  @staticmethod
  def _args(state, key, iterator_state, config) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        rng=ocp.args.StandardSave({'key': np.asarray(jax.random.key_data(key))}),
        data_iterator=ocp.args.JsonSave(iterator_state or {}),
        config=ocp.args.JsonSave(config.to_dict()))

  def save(self, step: int, state, key: jax.Array, iterator_state: dict | None,
           config: ml_collections.ConfigDict) -> None:
    if step in self.latest.all_steps():
      return
    self.latest.save(step, args=self._args(state, key, iterator_state, config), force=True)
    self.latest.wait_until_finished()

  def save_best(self, step: int, state, key: jax.Array, iterator_state: dict | None,
                config: ml_collections.ConfigDict, eval_metrics: dict[str, Any]) -> None:
    if self.best_metric not in eval_metrics:
      raise CheckpointError(f'train.best_metric {self.best_metric!r} is not an eval metric; '
                            f'available: {", ".join(sorted(eval_metrics))}')
    if step in self.best.all_steps():
      return
    metrics = {self.best_metric: float(eval_metrics[self.best_metric])}
    self.best.save(step, args=self._args(state, key, iterator_state, config), metrics=metrics,
                   force=True)
    self.best.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore(self, abstract_state, which: str = 'latest', step: int | None = None):
    """Returns (state, key, iterator_state, config_dict) from the chosen checkpoint, or None.

    Without a `step`, an unreadable newest checkpoint (truncated or corrupted files) is moved to
    `<workdir>/corrupt_checkpoints/` with a warning and the next newest is tried; if none can be
    read, CheckpointError lists every step tried and why. A checkpoint that reads but does not
    fit the config raises CheckpointError at once: that is a config change, not damage.

    Args:
      abstract_state: a TrainState of `jax.ShapeDtypeStruct`s (with shardings) to restore into.
      which: 'latest' or 'best'.
      step: a specific step of `which`; default its newest (or best).
    """
    manager = self.latest if which == 'latest' else self.best
    if step is not None:
      return self._restore_step(manager, which, step, abstract_state)
    candidates = sorted(manager.all_steps(), reverse=True)
    if which == 'best' and manager.best_step() is not None:
      candidates.remove(manager.best_step())
      candidates.insert(0, manager.best_step())
    failures = []
    for candidate in candidates:
      try:
        restored = self._restore_step(manager, which, candidate, abstract_state)
      except CheckpointError:
        raise
      except Exception as error:  # noqa: BLE001 - any read failure means a damaged checkpoint.
        failures.append(f'{manager.directory}/{candidate}: {type(error).__name__}: {error}'[:500])
        logging.warning('checkpoint %s/%d cannot be read (%s); moving it aside and trying an '
                        'older one', which, candidate, type(error).__name__)
        self._quarantine(manager, candidate)
        continue
      if failures:
        logging.warning('resumed from step %d; unreadable newer checkpoints were moved to %s',
                        candidate, self.quarantine_dir)
      return restored
    if failures:
      raise CheckpointError('no readable checkpoint; tried:\n  ' + '\n  '.join(failures))
    return None

  def _restore_step(self, manager, which: str, step: int, abstract_state):
    check_shapes(manager, step, abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        rng=ocp.args.StandardRestore(),
        data_iterator=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore()))
    key = jax.random.wrap_key_data(np.asarray(restored['rng']['key']),
                                   impl=prng.saved_impl(restored['config']))
    logging.info('restored checkpoint %s/%d', which, step)
    return restored['state'], key, restored['data_iterator'] or None, restored['config']

  def _quarantine(self, manager: ocp.CheckpointManager, step: int) -> None:
    """Moves a damaged checkpoint out of the manager's directory, keeping it for inspection."""
    os.makedirs(self.quarantine_dir, exist_ok=True)
    source = os.path.join(str(manager.directory), str(step))
    target = os.path.join(self.quarantine_dir, f'{os.path.basename(str(manager.directory))}-{step}')
    suffix = 0
    while os.path.exists(target + (f'.{suffix}' if suffix else '')):
      suffix += 1
    os.rename(source, target + (f'.{suffix}' if suffix else ''))
    manager.reload()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def check_shapes(manager: ocp.CheckpointManager, step: int, abstract_state) -> None:
  """Compares stored array shapes with the config's before Orbax sees them.

  A changed latent size, say, then fails with the parameter's name and both shapes instead of a
  traceback from deep inside the restore.
  """
  stored = manager.item_metadata(step)['state']
  stored = getattr(stored, 'tree', stored)
  stored_flat = _flat_by_name(stored)
  if not stored_flat:
    raise OSError(f'checkpoint {step} in {manager.directory} has no readable array metadata')
  expected_flat = _flat_by_name(abstract_state)
  missing = sorted(set(expected_flat) - set(stored_flat))
  extra = sorted(set(stored_flat) - set(expected_flat))
  if missing or extra:
    raise CheckpointError(
        f'checkpoint at step {step} in {manager.directory} does not fit this config: '
        f'parameters missing from it: {missing[:5]}; parameters only in it: {extra[:5]}')
  for name, leaf in expected_flat.items():
    stored_shape = tuple(getattr(stored_flat[name], 'shape', ()))
    if stored_shape != tuple(leaf.shape):
      raise CheckpointError(
          f'checkpoint at step {step} in {manager.directory} does not fit this config: '
          f'{name} has shape {stored_shape} in the checkpoint but {tuple(leaf.shape)} here '
          '(was the model config changed? use a new --workdir)')


def _flat_by_name(tree) -> dict[str, Any]:
  """Leaves keyed by a path like 'params/decoder/Dense_0/kernel'.

  Orbax's metadata turns tuples and named tuples (optimizer states) into dicts, so paths are
  compared by the names and indices of their entries, not by container types.
  """
  def name(entry) -> str:
    for attribute in ('key', 'idx', 'name'):
      if hasattr(entry, attribute):
        return str(getattr(entry, attribute))
    return str(entry)

  return {'/'.join(name(e) for e in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
