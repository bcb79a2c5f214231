"""The trainer: composes data, model, steps and checkpoints, and owns every side effect.

`train_and_evaluate(config, workdir)` is what `train.py` calls. A workdir holds one run:
`config.json`, `metrics.jsonl`, `tensorboard/`, `checkpoints/`, `best/`, `figures/` and
`eval/<split>/metrics.json`. Calling it again on the same workdir resumes from the newest
checkpoint; calling it on a finished run only re-evaluates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental.compilation_cache import compilation_cache

from jvae import (
  checkpointing,
  corruptions,
  host_memory,
  likelihood,
  metric_writer,
  parallel,
  plotting,
  prng,
  schedules,
  steps,
)
from jvae.compiled_step import CompiledStep
from jvae.config import ConfigError, validate_config
from jvae.data import pipeline, sources
from jvae.models import build_model, cpu_features
from jvae.train_state import TrainState, count_parameters, make_optimizer

del corruptions  # Imported for its registration of corruption kinds with config validation.

# XLA:CPU spends most of a small model's compile in backend optimization; code that runs once
# (initialization, figures) or in tests does not need it.
MINIMAL_XLA_OPTIMIZATION = {'xla_backend_optimization_level': 0,
                            'xla_llvm_disable_expensive_passes': True}


# XLA's YNNPACK library fusions without their convolutions: lax convolutions then run on
# XLA:CPU's own (Eigen) kernels (`train.cpu_conv_kernels`). Per-jit options take the whole list
# (XLA_FLAGS' '-individual_convolution' form is not accepted here): jaxlib 0.10.2's default is
# dot, reduce and individual_convolution, and this list compiled the same step times as the
# default on every system config without native convs (BENCHMARKS.md, thirteenth session).
_NO_YNNPACK_CONVOLUTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def cpu_conv_kernels(config: ml_collections.ConfigDict) -> str:
  """'ynnpack' or 'eigen': `train.cpu_conv_kernels` with 'auto' decided for this host."""
  choice = config.train.cpu_conv_kernels
  if choice == 'auto':
    return 'eigen' if cpu_features.host_is_intel() else 'ynnpack'
  return choice


def compiler_options(config: ml_collections.ConfigDict) -> dict | None:
  """The train and eval steps' XLA options (`train.xla_optimization`, `train.cpu_conv_kernels`)."""
  options = dict(MINIMAL_XLA_OPTIMIZATION) if config.train.xla_optimization == 'minimal' else {}
  if jax.default_backend() == 'cpu' and cpu_conv_kernels(config) == 'eigen':
    options.update(_NO_YNNPACK_CONVOLUTIONS)
  return options or None


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or infinite loss or gradient (train.nan_policy='stop')."""


class WorkdirInUseError(RuntimeError):
  """Another live process is training in this workdir."""


@dataclasses.dataclass
class Experiment:
  """Everything built from a config, before any parameters exist. Notebooks use it directly."""

  config: ml_collections.ConfigDict
  model: nn.Module
  image_shape: tuple[int, int, int]
  train_source: Any
  eval_source: Any
  mesh: jax.sharding.Mesh
  optimizer: optax.GradientTransformation
  beta_fn: Callable[[jax.Array], jax.Array]
  train_step: Callable  # jitted (state, batch, key) -> (state, metrics)
  eval_step: Callable  # jitted (state, batch, key) -> summed metrics
  apply_fn: Callable  # jitted model.apply(variables, ..., train=, sample=, method=)

  def init_state(self, key: jax.Array) -> TrainState:
    """Fresh parameters and optimizer state, replicated over the mesh."""
    return init_state(self.model, self.config, self.image_shape, self.optimizer, key, self.mesh)

  def abstract_state(self) -> TrainState:
    return abstract_state(self.model, self.config, self.image_shape, self.optimizer, self.mesh)

  def global_batch(self, local_batch: dict) -> dict:
    """This process's batch as global arrays sharded over the mesh (the pipelines' to_device)."""
    return parallel.global_batch(local_batch, self.mesh)


def create_experiment(config: ml_collections.ConfigDict, mesh=None,
                      image_shape: tuple[int, int, int] | None = None,
                      open_data: bool = True) -> Experiment:
  """Validates `config`, opens the data and builds the model and compiled steps.

  With `open_data=False` no data is read (the sources are None) and `image_shape` must be given:
  enough to apply a trained model to new images. Raises ConfigError or sources.DataError before
  anything is compiled.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  validate_config(config, mesh.devices.size)
  train_source = eval_source = None
  if open_data:
    train_source = sources.open_source(config.data, config.data.train_split, config.seed)
    eval_source = sources.open_source(config.data, config.data.eval_split, config.seed)
    image_shape = tuple(train_source.info.image_shape)
    if tuple(eval_source.info.image_shape) != image_shape:
      raise ConfigError(f'the train split has images of shape {image_shape} but the eval split '
                        f'{tuple(eval_source.info.image_shape)}; set data.image_size and '
                        'data.channels')
    if config.model.conditioning != 'none' and train_source.info.num_classes > \
        config.model.num_classes:
      raise ConfigError(f'model.num_classes is {config.model.num_classes} but the data has '
                        f'{train_source.info.num_classes} classes')
  elif image_shape is None:
    raise ValueError('create_experiment(open_data=False) needs image_shape=(H, W, C)')
  image_shape = tuple(int(d) for d in image_shape)
  model = build_model(config.model, image_shape)
  optimizer = make_optimizer(config.train)
  beta_fn = schedules.beta_schedule(config.loss, config.train.num_train_steps)
  replicated = parallel.replicated(mesh)
  batch_sharding = parallel.data_sharded(mesh)
  train_step = jax.jit(
      steps.make_train_step(model, config, optimizer, beta_fn, mesh),
      in_shardings=(replicated, batch_sharding, replicated),
      out_shardings=(replicated, replicated), donate_argnums=(0,),
      compiler_options=compiler_options(config))
  eval_step = jax.jit(steps.make_eval_step(model, config, beta_fn),
                      in_shardings=(replicated, batch_sharding, replicated),
                      out_shardings=replicated, compiler_options=compiler_options(config))
  apply_fn = jax.jit(model.apply, static_argnames=('train', 'sample', 'method'),
                     compiler_options=MINIMAL_XLA_OPTIMIZATION)
  return Experiment(config, model, image_shape, train_source, eval_source, mesh, optimizer,
                    beta_fn, train_step, eval_step, apply_fn)


def _init_fn(model: nn.Module, config: ml_collections.ConfigDict,
             image_shape: tuple[int, int, int], optimizer: optax.GradientTransformation):
  """The pure function key -> fresh TrainState."""
  images = jnp.zeros((1, *image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if config.model.conditioning != 'none' else None

  def init(key: jax.Array) -> TrainState:
    params_key, latent_key, dropout_key = jax.random.split(key, 3)
    variables = model.init({'params': params_key, 'latent': latent_key, 'dropout': dropout_key},
                           images, labels, train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=optimizer.init(params))

  return init


def init_state(model: nn.Module, config: ml_collections.ConfigDict,
               image_shape: tuple[int, int, int], optimizer: optax.GradientTransformation,
               key: jax.Array, mesh=None) -> TrainState:
  """Fresh parameters and optimizer state (replicated over `mesh` when given)."""
  shardings = parallel.replicated(mesh) if mesh is not None else None
  init = _init_fn(model, config, image_shape, optimizer)
  return jax.jit(init, out_shardings=shardings, compiler_options=MINIMAL_XLA_OPTIMIZATION)(key)


def abstract_state(model: nn.Module, config: ml_collections.ConfigDict,
                   image_shape: tuple[int, int, int], optimizer: optax.GradientTransformation,
                   mesh=None) -> TrainState:
  """The TrainState's shapes and dtypes (replicated over `mesh`), for restoring into."""
  shapes = jax.eval_shape(_init_fn(model, config, image_shape, optimizer), jax.random.key(0))
  if mesh is None:
    return shapes
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      shapes)


def evaluate(experiment: Experiment, state: TrainState, key: jax.Array,
             max_batches: int = 0, eval_step: Callable | None = None) -> dict[str, Any]:
  """Metrics over the whole eval split (or its first `max_batches` batches), deterministic.

  `eval_step` (default `experiment.eval_step`): a training run passes its CompiledStep.
  """
  config = experiment.config
  eval_step = experiment.eval_step if eval_step is None else eval_step
  totals = None
  batches = pipeline.eval_batches(
      experiment.eval_source, config.data, config.train.eval_batch_size, max_batches,
      jax.process_index(), jax.process_count(),
      to_device=experiment.global_batch)
  try:
    for index, batch in enumerate(batches):
      sums = eval_step(state, batch, jax.random.fold_in(key, index))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  finally:  # stops the prefetch thread, also when a step raises partway through the pass
    batches.close()
  metrics = steps.finalize_eval(jax.device_get(totals), config.train.active_unit_threshold)
  host_memory.release_freed_memory()  # after the eval step's first compile
  if 'elbo' in metrics and config.loss.reconstruction in likelihood.DENSITY_LIKELIHOODS:
    metrics['nelbo_bits_per_dim'] = likelihood.bits_per_dim(
        -metrics['elbo'], int(np.prod(experiment.image_shape)), config.loss.reconstruction,
        pipeline.value_bounds(config.data.value_range))
  return metrics


def first_eval_images(experiment: Experiment, count: int) -> dict[str, np.ndarray]:
  """The first `count` eval examples as uint8 images and labels (host arrays), with the
  distorted 'input' images when the source is paired."""
  source = experiment.eval_source
  return source.read_batch(np.arange(min(count, len(source))))


def write_figures(experiment: Experiment, state: TrainState, key: jax.Array, workdir: str
                  ) -> list[str]:
  """Reconstructions of held-out images, prior samples (VAEs) and the loss curve.

  Every process computes (the parameters are global arrays, so all must take part); only
  process 0 writes files.
  """
  config = experiment.config
  value_range = config.data.value_range
  examples = first_eval_images(experiment, config.train.num_figure_images)
  corruption_key, sample_key = jax.random.split(key)
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  batch = {k: jnp.asarray(v) for k, v in examples.items()}
  inputs, target, labels = steps.prepare_batch(batch, corruption_key, config, train=False)
  outputs = experiment.apply_fn(variables, inputs, labels, train=False, sample=False)
  rows = [pipeline.to_uint8(target, value_range)]
  titles = ['held-out images']
  if config.task != 'reconstruct' or 'input' in batch:
    rows.append(pipeline.to_uint8(inputs, value_range))
    titles.append('input (paired)' if 'input' in batch else f'input ({config.corruption.kind})')
  rows.append(pipeline.to_uint8(outputs['reconstruction'], value_range))
  titles.append('reconstruction (posterior mean)' if config.model.kind == 'vae' else
                'reconstruction')
  samples = None
  # A decoder with skip connections needs an input's encoder maps, so it has no prior samples.
  if config.model.kind == 'vae' and not config.model.skip_stages:
    count = config.train.num_figure_images
    z = jax.random.normal(sample_key, (count, config.model.latent_dim))
    sample_labels = (jnp.arange(count) % config.model.num_classes
                     if config.model.conditioning != 'none' else None)
    logits = experiment.apply_fn(variables, z, sample_labels, method='decode')
    samples = pipeline.to_uint8(experiment.apply_fn(variables, logits, method='activate'),
                                value_range)
  if jax.process_index() != 0:
    return []
  figure_dir = os.path.join(workdir, 'figures')
  paths = [plotting.save_rows(os.path.join(figure_dir, 'reconstructions.png'), rows, titles)]
  if samples is not None:
    paths.append(plotting.save_grid(os.path.join(figure_dir, 'samples.png'), samples,
                                    min(len(samples), 8), 'prior samples z ~ N(0, I)'))
  records = metric_writer.read_metrics(workdir)
  names = ['loss', 'reconstruction'] + (['kl'] if config.model.kind == 'vae' else [])
  paths.append(plotting.save_curves(os.path.join(figure_dir, 'curves.png'), records, names))
  return paths


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Refuses a second live run in the same workdir; the OS drops the lock if a run dies."""
  path = os.path.join(workdir, f'.lock.{jax.process_index()}')
  handle = open(path, 'a+')
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    owner = handle.read().strip() or 'unknown'
    handle.close()
    raise WorkdirInUseError(f'workdir {workdir!r} is in use by another training run (pid '
                            f'{owner}); wait for it to finish or choose another --workdir') \
        from None
  handle.seek(0)
  handle.truncate()
  handle.write(str(os.getpid()))
  handle.flush()
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


class _StopSignals:
  """Turns SIGTERM and SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # Not the main thread (e.g. some notebook kernels): leave as is.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _nonfinite_message(step: int, metrics: dict) -> str:
  bad = [name for name, value in metrics.items()
         if name != 'finite' and np.asarray(value).size == 1 and not np.isfinite(value)]
  return (f'training stopped at step {step}: non-finite {", ".join(bad) or "values"} '
          f'({", ".join(f"{k}={float(metrics[k])}" for k in bad)}); the last checkpoint is kept '
          'as it was. Lower train.learning_rate, set train.grad_clip_norm, or set '
          "train.nan_policy='skip' to skip such steps")


def use_compilation_cache(directory: str) -> None:
  """Points JAX's persistent compilation cache at `directory`: a rerun or resumed run then
  loads its compiled steps instead of compiling them."""
  if jax.config.jax_compilation_cache_dir != directory:
    jax.config.update('jax_compilation_cache_dir', directory)
    # JAX decides once per process, at its first compile, whether a cache is in use; a notebook
    # or test that compiled something before must make it look again.
    compilation_cache.reset_cache()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and evaluates.

  Returns the final eval metrics, also written to `<workdir>/eval/<split>/metrics.json`.
  """
  # Before create_experiment, which starts JAX's backends.
  host_memory.apply_reuse_step_buffers(config)
  experiment = create_experiment(config)  # Validates config and data before anything else.
  if config.train.compilation_cache_dir:
    use_compilation_cache(config.train.compilation_cache_dir)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock(workdir), _StopSignals() as stop:
    return _train(experiment, workdir, stop)


def _train(experiment: Experiment, workdir: str, stop: _StopSignals) -> dict[str, Any]:
  config = experiment.config
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, 'run_info.json'), 'w') as f:
      json.dump({'image_shape': list(experiment.image_shape),
                 'num_classes': experiment.train_source.info.num_classes,
                 'class_names': list(experiment.train_source.info.class_names),
                 'num_parameters': count_parameters(experiment.abstract_state().params),
                 'stage': config.train.stage, 'init_from': config.train.init_from}, f,
                indent=2)
  checkpoints = checkpointing.RunCheckpoints(
      workdir, config.train.keep_checkpoints, config.train.best_metric, config.train.best_mode)
  restored = checkpoints.restore(experiment.abstract_state())
  train_iter = pipeline.train_iterator(
      experiment.train_source, config.data, config.train.batch_size, config.seed,
      jax.process_index(), jax.process_count(),
      to_device=experiment.global_batch)
  if restored is None:
    key = prng.root_key(config.seed, config)
    state = experiment.init_state(jax.random.fold_in(key, 0))
    if config.train.init_from:
      state = _initialize_from(state, experiment, config)
    key = jax.random.fold_in(key, 1)
  else:
    state, key, iterator_state, saved_config = restored
    prng.check_resumable(config, saved_config)
    if iterator_state:
      pipeline.restore_state(train_iter, iterator_state, config.data)
  start_step = int(state.step)
  writer = metric_writer.MetricWriter(workdir)
  if is_main:
    metric_writer.truncate_after(workdir, start_step)
  logging.info('model %s with %s parameters; training%s from step %d to %d on %d device(s)',
               type(experiment.model).__name__, f'{count_parameters(state.params):,}',
               f' stage {config.train.stage!r}' if config.train.stage else '', start_step,
               config.train.num_train_steps, experiment.mesh.devices.size)
  eval_key = jax.random.fold_in(key, 2**31 - 1)  # A stream no train step folds in.
  learning_rate = schedules.learning_rate_schedule(config.train)
  num_steps = config.train.num_train_steps
  release_every = config.train.release_memory_every_steps
  shed = bool(config.train.shed_compiler_memory)
  train_step = CompiledStep(experiment.train_step, 'train_step', shed)
  eval_step = CompiledStep(experiment.eval_step, 'eval_step', shed)

  def checkpoint(step: int) -> None:
    checkpoints.save(step, state, key, train_iter.get_state(), config)

  progress = _progress_bar(config, start_step, num_steps, is_main)
  pending, previous, collapsed = [], None, None
  last_log_time, last_log_step = time.perf_counter(), start_step
  try:
    for step in range(start_step, num_steps):
      state, metrics = train_step(state, next(train_iter), key)
      if step == start_step or (release_every and (step + 1) % release_every == 0):
        # After the first step: the step is compiled, the compiler's freed memory need not stay
        # resident. Later: the holes that kept memory fragmented into (config.py).
        host_memory.release_freed_memory()
      # The previous step's finiteness is checked now, after this step is dispatched, so the
      # host never waits on the device just to look at one flag.
      if previous is not None and not bool(previous[1]['finite']):
        _on_nonfinite(config, previous)
      previous = (step, metrics)
      pending.append(metrics)
      done = step + 1
      if done % config.train.log_every_steps == 0 or done == num_steps:
        if not bool(metrics['finite']):
          _on_nonfinite(config, previous)
        now = time.perf_counter()
        summary = _mean_metrics(pending)
        summary['steps_per_second'] = (done - last_log_step) / (now - last_log_time)
        summary['images_per_second'] = summary['steps_per_second'] * config.train.batch_size
        summary['learning_rate'] = float(learning_rate(done - 1))
        writer.write(done, 'train', summary)
        collapsed = _warn_on_collapse(config, done, summary, 'training batch', collapsed)
        progress.set_postfix(loss=f'{summary["loss"]:.4g}',
                             img_s=f'{summary["images_per_second"]:.0f}')
        pending, last_log_time, last_log_step = [], now, done
      progress.update(1)
      if done % config.train.eval_every_steps == 0 and done != num_steps:
        eval_metrics = evaluate(experiment, state, eval_key, config.train.eval_max_batches,
                                eval_step)
        writer.write(done, 'eval', eval_metrics)
        _warn_on_collapse(config, done, eval_metrics, 'eval split', False)
        checkpoints.save_best(done, state, key, train_iter.get_state(), config, eval_metrics)
        write_figures(experiment, state, eval_key, workdir)
        if _agree_across_processes(_should_stop_early(config, workdir)):
          logging.info('early stopping at step %d: eval %s has not improved for %d evals',
                       done, config.train.best_metric, config.train.early_stopping_patience)
          break
      if done % config.train.checkpoint_every_steps == 0:
        checkpoint(done)
      if stop.received is not None:
        if previous is not None and not bool(previous[1]['finite']):
          _on_nonfinite(config, previous)
        checkpoint(done)
        logging.warning('received signal %d: saved a checkpoint at step %d; run the same '
                        'command to resume', stop.received, done)
        raise KeyboardInterrupt if stop.received == signal.SIGINT else SystemExit(
            128 + stop.received)
    if previous is not None and not bool(previous[1]['finite']):
      _on_nonfinite(config, previous)
    final_step = int(state.step)
    checkpoint(final_step)
    eval_metrics = evaluate(experiment, state, eval_key, eval_step=eval_step)
    writer.write(final_step, 'eval', eval_metrics)
    _warn_on_collapse(config, final_step, eval_metrics, 'eval split', False)
    checkpoints.save_best(final_step, state, key, train_iter.get_state(), config, eval_metrics)
    figures = write_figures(experiment, state, eval_key, workdir)
    if is_main:
      _write_final_metrics(workdir, config, final_step, eval_metrics, figures)
    return eval_metrics
  finally:
    train_iter.close()  # stops the device-prefetch thread
    progress.close()
    writer.close()
    checkpoints.close()


def _warn_on_collapse(config: ml_collections.ConfigDict, step: int, metrics: dict, where: str,
                      state: bool | None) -> bool | None:
  """Logs a warning when the active latent units fall below `train.collapse_warning_fraction`.

  `state` is None while the latent has not yet been active (a fresh encoder's posterior means
  barely vary with the input, which is not a collapse), False once it has, True after it fell
  below again. Only that fall warns, once (and a recovery is logged), so a run that stays
  collapsed says so once, not at every log step. On the eval split pass state=False: every eval
  below the fraction is reported. Returns the new state.
  """
  fraction = config.train.collapse_warning_fraction
  if 'active_units' not in metrics or fraction <= 0:
    return state
  active, latent = float(metrics['active_units']), config.model.latent_dim
  below = active < fraction * latent
  if not below:
    if state:
      logging.info('step %d: %.3g of %d latent dimensions active on the %s again', step, active,
                   latent, where)
    return False
  if state is False:
    logging.warning(
        'posterior collapse at step %d: %.3g of %d latent dimensions active on the %s, below '
        'train.collapse_warning_fraction=%g (active: posterior-mean variance over inputs above '
        'train.active_unit_threshold=%g); lower loss.beta, add loss.free_bits or a beta warm-up',
        step, active, latent, where, fraction, config.train.active_unit_threshold)
    return True
  return state


def _agree_across_processes(decision: bool) -> bool:
  """Process 0's decision, on every process: only process 0 reads the run's logs."""
  if jax.process_count() == 1:
    return decision
  from jax.experimental import multihost_utils  # Only multi-process runs need it.
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))


def _should_stop_early(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """True when the last `early_stopping_patience` evals did not beat the best before them.

  Read from the run's own eval log, so a resumed run counts exactly as an uninterrupted one.
  """
  patience = config.train.early_stopping_patience
  if patience <= 0:
    return False
  metric, sign = config.train.best_metric, 1.0 if config.train.best_mode == 'min' else -1.0
  values = [sign * r[metric] for r in metric_writer.read_metrics(workdir)
            if r['split'] == 'eval' and metric in r]
  if len(values) <= patience:
    return False
  return min(values[-patience:]) >= min(values[:-patience])


def _initialize_from(state: TrainState, experiment: Experiment,
                     config: ml_collections.ConfigDict) -> TrainState:
  """Copies parameters and BatchNorm statistics from another run's checkpoint.

  The optimizer state and step stay fresh: the new run is a new stage, not a resumption.
  """
  source = checkpointing.RunCheckpoints(config.train.init_from, 1, config.train.best_metric,
                                        config.train.best_mode)
  try:
    restored = source.restore(experiment.abstract_state(), config.train.init_from_checkpoint)
    if restored is None and config.train.init_from_checkpoint == 'best':
      restored = source.restore(experiment.abstract_state(), 'latest')
  finally:
    source.close()
  if restored is None:
    raise checkpointing.CheckpointError(
        f'train.init_from={config.train.init_from!r} holds no checkpoint to start from')
  logging.info('initialised parameters from %s (step %d)', config.train.init_from,
               int(restored[0].step))
  return state.replace(params=restored[0].params, batch_stats=restored[0].batch_stats)


def _on_nonfinite(config: ml_collections.ConfigDict, step_and_metrics) -> None:
  step, metrics = step_and_metrics
  message = _nonfinite_message(step, jax.device_get(metrics))
  if config.train.nan_policy == 'stop':
    raise NonFiniteError(message)
  logging.warning('skipped the update: %s', message)


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(pending)
  return {name: float(np.mean([m[name] for m in stacked])) for name in stacked[0]
          if name != 'finite'}


def _progress_bar(config, start: int, total: int, enabled: bool):
  from tqdm import auto as tqdm_auto  # Lazy: plain library users never see a bar.
  # Off when stderr is a file or pipe (CI, nohup, cluster logs): tqdm would write a line per
  # refresh there. Notebooks get tqdm.auto's widget.
  interactive = sys.stderr.isatty() or 'ipykernel' in sys.modules
  return tqdm_auto.tqdm(initial=start, total=total,
                        disable=not (enabled and config.train.progress_bar and interactive),
                        unit='step', dynamic_ncols=True)


def _write_final_metrics(workdir: str, config, step: int, metrics: dict, figures: list[str]
                         ) -> None:
  out_dir = os.path.join(workdir, 'eval', config.data.eval_split)
  os.makedirs(out_dir, exist_ok=True)
  record = {'step': step, 'split': config.data.eval_split, 'seed': config.seed,
            'metrics': metrics, 'figures': [os.path.relpath(p, workdir) for p in figures]}
  with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
    json.dump(record, f, indent=2)
  scalars = {k: v for k, v in metrics.items() if not isinstance(v, list)}
  logging.info('final eval on %s at step %d: %s', config.data.eval_split, step,
               json.dumps(scalars))
