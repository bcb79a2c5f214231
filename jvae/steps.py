"""The compiled train and eval steps: pure functions of (state, batch, key).

`make_train_step` returns `train_step(state, batch, key) -> (state, metrics)`. The key is the run's
base key; the step folds in `state.step`, then splits separate streams for the latent draw,
dropout and the input corruption, so a resumed run draws exactly what an uninterrupted one would.
Under `train.parallelism='shard_map'` the device index, and with gradient accumulation the
micro-batch index, are folded in before the split (see `make_train_step`).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jvae import losses, parallel, prng
from jvae import metrics as image_metrics
from jvae.data import pipeline
from jvae.train_state import TrainState


def binarize(images: jax.Array, key: jax.Array, indices: jax.Array | None = None) -> jax.Array:
  """Bernoulli draws with the pixel intensities in [0, 1] as probabilities.

  With `indices`, each example's draw is keyed by its index alone (a fixed binarized split, the
  same whatever the batching); without, by `key` (a fresh draw every training step).
  """
  if indices is None:
    return jax.random.bernoulli(key, images).astype(images.dtype)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  return jax.vmap(lambda k, x: jax.random.bernoulli(k, x).astype(x.dtype))(keys, images)


BINARIZATION_SEED_OFFSET = 7919  # Separates the fixed eval binarization from other streams.


def prepare_batch(batch: dict, key: jax.Array, config: ml_collections.ConfigDict,
                  train: bool = True) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """uint8 batch -> (model input, clean target, labels or None), corrupting inside the step.

  A batch from a paired source carries its distorted images as 'input' [B, H, W, C] uint8; they
  are the model input as they are, and no corruption is drawn.
  """
  target = pipeline.to_float(batch['image'], config.data.value_range)
  if config.data.binarize == 'dynamic':
    if train:
      key, binarize_key = jax.random.split(key)
      target = binarize(target, binarize_key)
    else:
      eval_key = prng.root_key(config.seed + BINARIZATION_SEED_OFFSET, config)
      target = binarize(target, eval_key, batch['index'])
  inputs = target
  if 'input' in batch:
    inputs = pipeline.to_float(batch['input'], config.data.value_range)
  elif config.task == 'denoise':
    from jvae import corruptions  # Imported here: only denoising configs need it.
    inputs = corruptions.corrupt(config.corruption.kind, key, target, config.corruption.strength,
                                 pipeline.value_bounds(config.data.value_range))
  labels = batch['label'] if config.model.conditioning != 'none' else None
  return inputs, target, labels


def _variables(params, batch_stats) -> dict:
  variables = {'params': params}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  return variables


def split_micro_batches(batch: dict, count: int) -> dict:
  """[B, ...] leaves -> [count, B / count, ...]: micro-batch i holds examples i, i + count, ...

  Strided rather than contiguous, so that on a batch sharded over devices every micro-batch
  takes the same share of every device's rows and the split moves no data between devices.
  """
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1), batch)


def make_train_step(model: nn.Module, config: ml_collections.ConfigDict,
                    optimizer: optax.GradientTransformation,
                    beta_fn: Callable[[jax.Array], jax.Array],
                    mesh: jax.sharding.Mesh | None = None):
  """Builds the (not yet jitted) train step for `model` under `config`.

  `train.parallelism='jit'` leaves the partitioning to `jax.jit` and the shardings of the
  arguments: BatchNorm sees the global batch. 'shard_map' runs the loss and gradient of each
  device's shard under `jax.shard_map` over `mesh`'s 'data' axis and averages gradients, metrics
  and BatchNorm running averages with `pmean`: BatchNorm normalises with each device's own batch
  statistics, as per-device data parallelism (PyTorch DDP without SyncBatchNorm) does (free bits
  and `anchor_normalization='batch'` likewise act per device). Each device draws its noise from
  `fold_in(step_key, axis_index('data'))`, so the draws depend on the device count; the optimizer
  update runs once, replicated, outside the shard_map.

  `train.grad_accumulation_steps=k > 1` splits each device's batch into k micro-batches
  (`split_micro_batches`) that a `lax.scan` runs one after another, and applies the mean of their
  gradients as one update: for a model without batch-dependent layers this equals the update on
  the whole batch. Micro-batch i draws its noise from `fold_in(key, i)`. What depends on the batch
  as a whole differs: BatchNorm normalises each micro-batch by its own statistics and updates its
  running averages k times, free bits and `anchor_normalization='batch'` act per micro-batch.
  """
  skip_bad_steps = config.train.nan_policy == 'skip'
  accumulation = config.train.grad_accumulation_steps

  def batch_grads(params, batch_stats, batch: dict, key: jax.Array, beta: jax.Array):
    """(gradients, metrics, updated batch_stats) of the loss on one batch."""
    latent_key, dropout_key, corruption_key = jax.random.split(key, 3)
    inputs, target, labels = prepare_batch(batch, corruption_key, config)

    def loss_fn(params):
      outputs, updates = model.apply(
          _variables(params, batch_stats), inputs, labels, train=True,
          rngs={'latent': latent_key, 'dropout': dropout_key}, mutable=['batch_stats'])
      loss, metrics = losses.objective(outputs, target, beta, config.loss)
      if 'mu' in outputs:
        # On this batch only (per device or micro-batch when those split it): an estimate of
        # eval's count over the split, cheap enough for every step, so collapse shows as it
        # happens.
        metrics['active_units'] = active_units(
            outputs['mu'], config.train.active_unit_threshold).astype(jnp.float32)
      return loss, (metrics, updates.get('batch_stats', batch_stats))

    (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, metrics, batch_stats

  def accumulated_grads(params, batch_stats, batch: dict, key: jax.Array, beta: jax.Array):
    if accumulation == 1:
      # The key as it is, so that k=1 draws exactly what the step drew before accumulation.
      return batch_grads(params, batch_stats, batch, key, beta)

    def micro_step(carry, micro):
      grads_sum, batch_stats = carry
      index, micro_batch = micro
      grads, metrics, batch_stats = batch_grads(
          params, batch_stats, micro_batch, jax.random.fold_in(key, index), beta)
      return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), metrics

    # zeros_like keeps the params' varying-over-devices type, which the scan carry must match.
    init = (jax.tree.map(jnp.zeros_like, params), batch_stats)
    (grads_sum, batch_stats), metrics = jax.lax.scan(
        micro_step, init, (jnp.arange(accumulation), split_micro_batches(batch, accumulation)))
    # The loss is a mean over the batch, so the mean of equal-sized micro-batch gradients (and
    # metrics) is the full-batch one.
    return (jax.tree.map(lambda g: g / accumulation, grads_sum),
            jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), batch_stats)

  if config.train.parallelism == 'shard_map':
    if mesh is None:
      raise ValueError("train.parallelism='shard_map' needs the device mesh: "
                       'make_train_step(..., mesh=parallel.make_mesh())')

    def device_grads(params, batch_stats, batch: dict, key: jax.Array, beta: jax.Array):
      key = jax.random.fold_in(key, jax.lax.axis_index(parallel.DATA_AXIS))
      # Replicated (invariant) params would make jax.grad insert a psum that SUMS the devices'
      # gradients; cast to per-device values, each device gets its own gradient to pmean.
      params, batch_stats = jax.lax.pcast((params, batch_stats), parallel.DATA_AXIS,
                                          to='varying')
      out = accumulated_grads(params, batch_stats, batch, key, beta)
      return jax.lax.pmean(out, parallel.DATA_AXIS)

    replicated, sharded = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(
        parallel.DATA_AXIS)
    compute_grads = jax.shard_map(
        device_grads, mesh=mesh, in_specs=(replicated, replicated, sharded, replicated,
                                           replicated), out_specs=replicated)
  else:
    compute_grads = accumulated_grads

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    step_key = jax.random.fold_in(key, state.step)
    beta = beta_fn(state.step)
    grads, metrics, batch_stats = compute_grads(state.params, state.batch_stats, batch,
                                                step_key, beta)
    loss = metrics['loss']
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics.update(grad_norm=grad_norm, finite=finite)
    if config.train.log_weight_norms:
      metrics.update(param_norm=optax.tree.norm(params), update_norm=optax.tree.norm(updates))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if skip_bad_steps:
      # A non-finite step leaves the state as it was (but still advances the step, so the next
      # step draws new noise); with 'stop' the host raises before anything is saved.
      kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
      new_state = kept.replace(step=state.step + 1)
    return new_state, metrics

  return train_step


# Per-example eval quantities summed over a batch (weighted by the padding mask) and their
# normalisers; `finalize_eval` turns the sums into means.
def make_eval_step(model: nn.Module, config: ml_collections.ConfigDict,
                   beta_fn: Callable[[jax.Array], jax.Array]):
  """Builds `eval_step(state, batch, key) -> sums` over one padded batch.

  The caller folds the batch index into `key`, so every eval pass draws the same noise.
  """

  def eval_step(state: TrainState, batch: dict, key: jax.Array) -> dict[str, jax.Array]:
    mask = batch['mask']
    latent_key, corruption_key = jax.random.split(key)
    inputs, target, labels = prepare_batch(batch, corruption_key, config, train=False)
    outputs = model.apply(_variables(state.params, state.batch_stats), inputs, labels, train=False,
                          rngs={'latent': latent_key})
    terms = losses.per_example_terms(outputs, target, config.loss)
    sums = {'count': jnp.sum(mask), 'reconstruction': jnp.sum(mask * terms['reconstruction'])}
    # Image scores use the posterior-mean reconstruction (z = mu): deterministic, and what a
    # restorer would output; the likelihood terms above use the sample, as the ELBO does.
    mean_outputs = outputs if 'mu' not in outputs else model.apply(
        _variables(state.params, state.batch_stats), inputs, labels, train=False, sample=False)
    quality = image_quality(mean_outputs['reconstruction'], target, config.data.value_range)
    if config.task != 'reconstruct' or 'input' in batch:
      # The corrupted input scored against the clean target: the baseline a restorer must beat.
      quality.update({f'input_{name}': value for name, value in image_quality(
          inputs, target, config.data.value_range).items()})
    sums.update({name: jnp.sum(mask * value) for name, value in quality.items()})
    loss = terms['reconstruction']
    if 'kl' in terms:
      beta = beta_fn(state.step)
      loss = loss + beta * terms['kl']
      mu = outputs['mu']
      sums.update(kl=jnp.sum(mask * terms['kl']),
                  kl_per_dim=jnp.sum(mask[:, None] * terms['kl_per_dim'], axis=0),
                  mu_sum=jnp.sum(mask[:, None] * mu, axis=0),
                  mu_sq_sum=jnp.sum(mask[:, None] * jnp.square(mu), axis=0))
    if 'noise_mask' in outputs:
      # The mean noise scale an anchor applied: the constant of the ablation that injects as
      # little noise without choosing where (configs/vae_cifar64_constant_noise.py).
      sums['noise_mask_mean'] = jnp.sum(mask * jnp.mean(outputs['noise_mask'], axis=-1))
    sums['loss'] = jnp.sum(mask * loss)
    return sums

  return eval_step


def image_quality(images: jax.Array, target: jax.Array, value_range: str
                  ) -> dict[str, jax.Array]:
  """Per-image [B] scores on the [0, 1] scale whatever the data's range, so that numbers
  compare across configs: mse (per pixel), sse (summed over pixels; SAAAE's "MSE"), psnr, ssim,
  hist_corr (S6's per-channel 256-bin histogram correlation).
  """
  low, high = pipeline.value_bounds(value_range)
  a = (images.astype(jnp.float32) - low) / (high - low)
  b = (target.astype(jnp.float32) - low) / (high - low)
  mse = image_metrics.mean_squared_error(a, b)
  # PSNR from a floored MSE: an exact copy scores 100 dB instead of an infinite mean.
  return {'mse': mse, 'sse': image_metrics.sum_squared_error(a, b),
          'psnr': -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)),
          'ssim': image_metrics.ssim(a, b, 1.0),
          # 256 bins, one per 8-bit level: a [256, 64, 64, 3] pair takes 0.17 s on 2 CPU cores,
          # the same as 64 bins (the scatter over pixels dominates) and a third of SSIM.
          'hist_corr': image_metrics.histogram_correlation(a, b, bins=256)}


def active_units(mu: jax.Array, threshold: float) -> jax.Array:
  """How many latent dimensions are active in posterior means mu [B, D] (Burda et al. 2016):
  those whose variance over the B inputs exceeds `threshold`."""
  return jnp.sum(jnp.var(mu.astype(jnp.float32), axis=0) > threshold)


def finalize_eval(totals: dict, active_unit_threshold: float) -> dict:
  """Means from summed eval quantities, plus KL per dimension and active units for VAEs.

  `active_unit_threshold` is `train.active_unit_threshold` (Burda et al. 2016 use 0.01): a
  dimension whose posterior mean varies over the split by more than this is active.
  """
  count = max(float(totals['count']), 1.0)
  per_image = [name for name in totals
               if name not in ('count', 'kl_per_dim', 'mu_sum', 'mu_sq_sum')]
  metrics = {name: float(totals[name]) / count for name in per_image}
  if 'kl' in totals:
    metrics['elbo'] = -(metrics['reconstruction'] + metrics['kl'])
    kl_per_dim = [float(v) / count for v in totals['kl_per_dim']]
    mean = totals['mu_sum'] / count
    variance = totals['mu_sq_sum'] / count - mean**2
    metrics['active_units'] = int(jnp.sum(variance > active_unit_threshold))
    metrics['kl_per_dim'] = kl_per_dim
  metrics['count'] = int(totals['count'])
  return metrics
