"""The training state pytree and the optimizer built from config."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import ml_collections
import optax

from jvae import schedules


class TrainState(flax.struct.PyTreeNode):
  """Everything the train step updates. `batch_stats` is {} for models without BatchNorm."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping (when grad_clip_norm > 0) followed by Adam or AdamW on a schedule."""
  schedule = schedules.learning_rate_schedule(train_config)
  if train_config.optimizer == 'adam':
    optimizer = optax.adam(schedule)
  elif train_config.optimizer == 'adamw':
    optimizer = optax.adamw(schedule, weight_decay=train_config.weight_decay)
  else:
    raise ValueError(f"train.optimizer {train_config.optimizer!r}; allowed: 'adam', 'adamw'")
  if train_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), optimizer)
  return optimizer


def count_parameters(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
