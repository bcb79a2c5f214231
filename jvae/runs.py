"""Loading a trained run back from its workdir: config, model and parameters."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from jvae import checkpointing, trainer
from jvae.config import base_config
from jvae.train_state import TrainState


@dataclasses.dataclass
class TrainedRun:
  """A run restored from a checkpoint. `experiment.apply_fn` applies its model (jitted)."""

  workdir: str
  config: ml_collections.ConfigDict
  experiment: trainer.Experiment
  state: TrainState
  key: jax.Array  # the run's base key
  step: int
  checkpoint: str  # 'best', 'latest' or the step asked for

  @property
  def variables(self) -> dict[str, Any]:
    variables = {'params': self.state.params}
    if self.state.batch_stats:
      variables['batch_stats'] = self.state.batch_stats
    return variables


def _as_config(values: dict[str, Any]) -> ml_collections.ConfigDict:
  """config.json (tuples stored as lists) -> a ConfigDict typed like `base_config()`."""
  config = base_config()

  def update(target: ml_collections.ConfigDict, source: dict[str, Any], prefix: str) -> None:
    for key, value in source.items():
      if key not in target:
        raise ValueError(f'{prefix}{key} in config.json is not a config field of this version '
                         'of jvae')
      if isinstance(value, dict):
        update(target[key], value, f'{prefix}{key}.')
      else:
        with target.ignore_type():
          target[key] = tuple(value) if isinstance(value, list) else value

  update(config, values, '')
  return config


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir!r} holds no config.json; is it a jvae run directory?')
  with open(path) as f:
    return _as_config(json.load(f))


def load_run(workdir: str, checkpoint: str | int = 'best', open_data: bool = True,
             config_overrides: dict[str, Any] | None = None) -> TrainedRun:
  """Restores the run in `workdir` from its 'best' or 'latest' checkpoint, or a given step.

  Args:
    workdir: a directory written by `train.py`.
    checkpoint: 'best', 'latest', or a step number of the latest-N checkpoints.
    open_data: open the config's data sources (needed to evaluate; not to apply the model).
    config_overrides: dotted field -> value changes, e.g. {'data.eval_split': 'train'}.
  """
  config = load_config(workdir)
  for field, value in (config_overrides or {}).items():
    section, _, name = field.rpartition('.')
    target = config
    for part in filter(None, section.split('.')):
      target = target[part]
    target[name] = value
  info_path = os.path.join(workdir, 'run_info.json')
  image_shape = None
  if os.path.exists(info_path):
    with open(info_path) as f:
      image_shape = tuple(json.load(f)['image_shape'])
  experiment = trainer.create_experiment(config, image_shape=image_shape,
                                         open_data=open_data or image_shape is None)
  manager = checkpointing.RunCheckpoints(workdir, config.train.keep_checkpoints,
                                         config.train.best_metric, config.train.best_mode)
  try:
    if checkpoint in ('best', 'latest'):
      restored = manager.restore(experiment.abstract_state(), checkpoint)
      if restored is None and checkpoint == 'best':
        restored = manager.restore(experiment.abstract_state(), 'latest')
    else:
      restored = manager.restore(experiment.abstract_state(), 'latest', int(checkpoint))
  finally:
    manager.close()
  if restored is None:
    raise checkpointing.CheckpointError(f'{workdir!r} holds no checkpoint ({checkpoint!r})')
  state, key, _, _ = restored
  return TrainedRun(workdir, config, experiment, state, key, int(state.step), str(checkpoint))
