"""Schedules of the KL weight beta and the learning rate, as functions of the step."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def beta_schedule(loss_config: ml_collections.ConfigDict, total_steps: int):
  """Returns step -> beta for `loss.beta_schedule`.

  constant: beta. linear: 0 -> beta over `beta_warmup_steps` (Bowman et al., 2016).
  cyclical: `beta_cycles` cycles over the run, each ramping 0 -> beta over the first
  `beta_cycle_ramp_fraction` of the cycle and holding beta for the rest (Fu et al., 2019).
  """
  beta = float(loss_config.beta)
  kind = loss_config.beta_schedule
  if kind == 'constant':
    return lambda step: jnp.asarray(beta, jnp.float32)
  if kind == 'linear':
    warmup = max(int(loss_config.beta_warmup_steps), 1)
    return lambda step: beta * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)
  if kind == 'cyclical':
    period = max(total_steps / int(loss_config.beta_cycles), 1.0)
    ramp = max(float(loss_config.beta_cycle_ramp_fraction), 1e-8)

    def cyclical(step):
      phase = jnp.mod(jnp.asarray(step, jnp.float32), period) / period
      return beta * jnp.minimum(1.0, phase / ramp)

    return cyclical
  raise ValueError(f"loss.beta_schedule {kind!r}; allowed: 'constant', 'linear', 'cyclical'")


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """optax schedule for `train.lr_schedule`: constant, cosine, or warmup_cosine."""
  lr = float(train_config.learning_rate)
  steps = int(train_config.num_train_steps)
  kind = train_config.lr_schedule
  if kind == 'constant':
    return optax.constant_schedule(lr)
  if kind == 'cosine':
    return optax.cosine_decay_schedule(lr, decay_steps=steps)
  if kind == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=int(train_config.warmup_steps), decay_steps=steps)
  raise ValueError(f"train.lr_schedule {kind!r}; allowed: 'constant', 'cosine', 'warmup_cosine'")
