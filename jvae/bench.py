"""Benchmark of every system's train step, with a PyTorch twin of the same model beside it.

  python -m jvae.bench [--configs configs/a.py,configs/b.py] [--steps 30] [--warmup 5]
      [--torch | --notorch] [--torch_compile | --notorch_compile] [--output BENCHMARKS_table.md]
      [--conv_impl native|fast|fast_low_memory|fast_patches|patches|shifted]
      [--conv_transpose_impl native|fast|fused|phases|shared|scatter]
  python -m jvae.bench --check [--configs ...]     # the twin's equality checks; exit 1 on failure

Each config runs in its own subprocess (`python -m jvae.bench --single <config>`, which prints one
JSON line), so that its peak RSS is its own; with torch, the twin's memory is measured in one more
fresh subprocess per form (`--torch_memory eager|compile`), so that no framework's or form's peak
hides another's. Configs run at their native image shape and batch size; a config whose data
cannot be opened here (a placeholder folder, an unprepared TFDS set) is fed random uint8 images
of its `data.image_size` and `data.channels` instead, and says so.
By default every `configs/*.py` except `test.py` and sweeps (files defining `sweep`) is run.

What is measured, per config, in this order:

- compile s: wall time of `train_step.lower(state, batch, key).compile()` of the jitted, donating
  train step (`jvae.trainer.create_experiment`), tracing included, persistent compilation cache
  off; the steps below run that compiled executable.
- pipeline overhead %: `--pipeline_steps` steps (default 100) in blocks of 5 fed from grain's
  `train_iterator` (`next()` of the trainer's device-prefetching iterator + step), paired with
  equal blocks fed one device-resident batch, the pairs alternating which block runs first.
  Steps within a block are dispatched as the trainer's loop does, so the next batches are read
  and copied to the device while a step computes; each block is timed to the end of its last
  step. The overhead is the median pipeline-fed block over the median resident block, minus 1;
  in brackets the quartiles of the pairs' own overheads.
- JAX ms/step, img/s: median over `--steps` device-resident steps (after `--warmup`), timed to
  completion. With torch, these steps alternate with the torch twin's eager and `torch.compile`
  steps, in blocks of 6 consecutive steps of each whose first is run untimed (torch's OpenMP
  threads spin on after its steps and slow the step that follows; `_FRAMEWORK_BLOCK`), so all
  three see the same machine load.
- torch eager / torch.compile ms/step: the twin (`jvae.torch_twin`) with the same weights, layers
  and loss, `clip_grad_norm_` then Adam(W); `torch.compile` covers forward and loss (backward
  through AOTAutograd), clipping and the optimizer are eager in both. The twin's step takes float
  NCHW batches prepared once, so it leaves out what the JAX step does first: the uint8 -> float
  conversion, dynamic binarization and the input corruption of denoising configs (the notes say
  which). JAX/torch ratios above 1 mean JAX is slower.
- Memory, per framework, each in a fresh process of its own. Baseline: the resident set
  (VmRSS) once the framework and the model code are imported and the inputs exist, after a
  throwaway train step of a one-conv model (`warm_up_jax`, `warm_up_torch`: what a framework
  loads on first use, such as the torch._dynamo and sympy that torch.optim imports, does not grow
  with the model; the JSON rows keep it as *_warm_up_mb), before any model is built. Peak: VmHWM
  after the warm-up and timed steps, reset to the baseline through /proc/self/clear_refs so that
  earlier transients do not count (ru_maxrss where /proc is missing). JAX peak RSS MB is the
  whole process's peak; model MB = peak - baseline: parameters, optimizer state, activations,
  and compiled code (JAX) or autograd graphs (torch). JAX ÷ eager/compile memory is JAX model MB
  over the twin's. On CPU, JAX's peak is often its compile's: XLA builds the step in-process
  with a few hundred MB of transient state. "JAX model MB after compile" is the peak of the
  steps alone, measured after the compile with the freed memory returned
  (`jvae.host_memory`) and VmHWM reset: what a run whose step comes from the persistent
  compilation cache (train.compilation_cache_dir) peaks at.
  JAX: the `--single` process; baseline after the data is open, the XLA client is up and the
  first batch is read (the twin holds no dataset); peak after the warm-up and the pipeline and
  resident blocks above, before torch is imported.
  torch: `--torch_memory eager` and `--torch_memory compile`, the same warm-up + timed steps of
  one form on random batches of the config's shape, the twin keeping its own torch
  initialisation (JAX-initialised weights would start JAX in the process being measured; the
  loss equality is --check's). These processes carry JAX's libraries too, because
  jvae.torch_twin imports jvae.models (flax, JAX): they are in the baseline, and subtracting the
  baseline is what makes model MB comparable across frameworks. The compile form's warm-up step
  goes through torch.compile, so its baseline holds dynamo and inductor, and its model MB the
  model's graphs and generated code, as JAX's holds its compiled step (inductor's compile
  workers and C++ compiler are other processes, not counted; XLA compiles in-process).

Times depend on machine load: compare numbers from one run, where variants alternate.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib.util
import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from absl import app, flags

from jvae import host_memory

REPO = pathlib.Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when run as a program, so importing the module (tests,
  notebooks) never collides with other modules' flags."""
  flags.DEFINE_list('configs', None, 'Config files (path[:arg]); default: every configs/*.py '
                    'except test.py and sweeps.')
  flags.DEFINE_integer('steps', 30, 'Timed steps per variant (after warm-up).', lower_bound=1)
  flags.DEFINE_integer('warmup', 5, 'Untimed steps per variant before timing.', lower_bound=0)
  flags.DEFINE_integer('pipeline_steps', 100, 'Steps of each kind (pipeline-fed, resident) in '
                       'the input-pipeline overhead measurement; 0: --steps.', lower_bound=0)
  flags.DEFINE_boolean('torch', None, 'Run the PyTorch twin (default: when torch is importable).')
  flags.DEFINE_boolean('torch_compile', True, 'Also time the twin under torch.compile.')
  flags.DEFINE_integer('torch_threads', 0, 'torch.set_num_threads for the twin; 0 keeps '
                       "torch's default (one per physical core).", lower_bound=0)
  flags.DEFINE_string('output', None, 'Also write the Markdown table to this file.')
  # jvae.config holds the layers' impl lists without importing jax (tests/test_layers.py
  # checks that they match).
  from jvae.config import CHOICES
  flags.DEFINE_enum('conv_impl', None, list(CHOICES['model.conv_impl']),
                    'Override model.conv_impl.')
  flags.DEFINE_enum('conv_transpose_impl', None, list(CHOICES['model.conv_transpose_impl']),
                    'Override model.conv_transpose_impl.')
  flags.DEFINE_boolean('check', False, 'Check the twin against the JAX model (same loss from the '
                       'same weights, same parameters after --check_steps real train steps) '
                       'instead of timing; exit 1 if any check fails.')
  flags.DEFINE_boolean('reuse_step_buffers', None, 'Override train.reuse_step_buffers (default: '
                       "the config's) in the JAX timing processes.")
  flags.DEFINE_integer('check_steps', 3, 'Train steps compared by --check.', lower_bound=0)
  flags.DEFINE_string('single', None, 'Internal: run one config in this process and print one '
                      'JSON line.')
  flags.DEFINE_integer('timeout', 3600, 'Seconds allowed per config subprocess.', lower_bound=1)
  flags.DEFINE_enum('torch_memory', None, ['eager', 'compile'], 'Internal, with --single: '
                    "measure the torch twin's memory alone in this process and print one JSON "
                    'line.')
  flags.DEFINE_list('image_shape', None, 'Internal, with --torch_memory: H,W,C of the images '
                    '(from the JAX run, so that this process opens no data).')


# --check tolerances. The loss from the same weights: relative difference LOSS_RTOL (float32
# sums over up to 49152 pixels in different orders). Gradients, losses after updates and the
# updated parameters are compared with a float64 run of the twin as the reference: JAX may be
# FLOAT64_FACTOR times as far from it as the float32 twin is, or GRAD_FLOOR / UPDATE_FLOOR
# (relative). The floors allow for the discontinuities float32 rounding can cross: one ReLU input
# on the other side of 0 moves a gradient by ~1e-4, and Adam, which divides each gradient by its
# own size, turns gradient differences of 1e-7..1e-3 into update differences of a few %.
LOSS_RTOL = 1e-4
FLOAT64_FACTOR = 3.0
GRAD_FLOOR = 1e-3
UPDATE_FLOOR = 0.1


# ----------------------------------------------------------------------------------- configs


def default_configs() -> list[str]:
  """Every configs/*.py except test.py and sweep files (those that define `sweep`)."""
  found = []
  for path in sorted((REPO / 'configs').glob('*.py')):
    if path.name == 'test.py' or 'def sweep(' in path.read_text():
      continue
    found.append(str(path.relative_to(REPO)))
  return found


def _resolve(spec: str) -> tuple[pathlib.Path, str | None]:
  path_text, _, arg = spec.partition(':')
  path = pathlib.Path(path_text)
  if not path.is_absolute() and not path.exists():
    path = REPO / path
  if not path.exists():
    raise FileNotFoundError(f'config file {path_text!r} not found (also looked in {REPO})')
  return path.resolve(), arg or None


def load_config(spec: str):
  """The config of `path[:arg]` (arg is passed to get_config, as config_flags does)."""
  path, arg = _resolve(spec)
  module_spec = importlib.util.spec_from_file_location(f'bench_config_{path.stem}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def config_name(spec: str) -> str:
  path_text, _, arg = spec.partition(':')
  name = pathlib.Path(path_text).stem
  return f'{name}:{arg}' if arg else name


def _override(config, conv_impl: str | None, conv_transpose_impl: str | None):
  if conv_impl:
    config.model.conv_impl = conv_impl
  if conv_transpose_impl:
    config.model.conv_transpose_impl = conv_transpose_impl
  return config


# ------------------------------------------------------------------------------------- memory


def _proc_status_mb(field: str) -> float | None:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(f'{field}:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def peak_rss_mb() -> float:
  """This process's peak resident set in MB: VmHWM, which `reset_peak_rss` can reset, else
  ru_maxrss (kilobytes on Linux), which also keeps the peak of the image before exec()."""
  peak = _proc_status_mb('VmHWM')
  if peak is not None:
    return peak
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
  """Resets VmHWM to the current resident set (Linux's clear_refs '5'), so that a later
  `peak_rss_mb` is the peak since now; False where that is not possible."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
  except OSError:
    return False
  return _proc_status_mb('VmHWM') is not None


def current_rss_mb() -> float:
  rss = _proc_status_mb('VmRSS')
  if rss is not None:
    return rss
  import psutil  # The bench extra; only where /proc is missing.
  return psutil.Process().memory_info().rss / 2**20


def memory_baseline(warm_up=None) -> dict[str, Any]:
  """The resident set after `warm_up()`, as the baseline of a memory measurement, with the peak
  reset to it (so that an earlier transient, e.g. decoding a dataset, does not count as model
  memory). 'warm_up_mb' is what the warm-up added."""
  before = current_rss_mb()
  if warm_up is not None:
    warm_up()
  gc.collect()
  rss = current_rss_mb()
  return {'baseline_rss_mb': rss, 'warm_up_mb': rss - before, 'peak_reset': reset_peak_rss()}


def memory_since(baseline: dict[str, Any]) -> dict[str, Any]:
  """Peak RSS and model memory (peak - baseline) since `memory_baseline()`."""
  peak = peak_rss_mb()
  return {'peak_rss_mb': peak, 'baseline_rss_mb': baseline['baseline_rss_mb'],
          'model_mb': peak - baseline['baseline_rss_mb'], 'warm_up_mb': baseline['warm_up_mb'],
          'peak_reset': baseline['peak_reset']}


def warm_up_jax(clear_caches: bool = False) -> None:
  """A throwaway jitted gradient and Adam step of a one-conv model.

  Parts of each framework load on first use: torch.optim imports torch._dynamo and sympy
  (~70 MB) when the first optimizer is built, the first backward and convolution start thread
  pools and kernel libraries, XLA initialises its compiler. Those do not grow with the model, so
  both frameworks run such a step before their baseline (see `warm_up_torch`).

  `clear_caches`: then clear JAX's caches, for a step that will clear them after its compile
  (`train.shed_compiler_memory`): otherwise the baseline would hold the warm-up's caches, which
  that clearing frees, and the model's memory would come out lower than it is.
  """
  import jax
  import jax.numpy as jnp
  import optax
  params = {'kernel': jnp.ones((3, 3, 1, 2)), 'dense': jnp.ones((128, 1))}
  x = jnp.ones((2, 8, 8, 1))
  optimizer = optax.adam(1e-3)

  def step(params, opt_state):
    def loss(p):
      y = jax.lax.conv_general_dilated(x, p['kernel'], (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      return jnp.sum(y.reshape(2, -1) @ p['dense'])
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  jax.block_until_ready(jax.jit(step)(params, optimizer.init(params)))
  if clear_caches:
    jax.clear_caches()


def warm_up_torch(compile: bool) -> None:
  """`warm_up_jax`'s step in torch, eager or through torch.compile (which then has imported
  dynamo and inductor)."""
  import torch
  model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
                              torch.nn.Linear(128, 1))
  optimizer = torch.optim.Adam(model.parameters())
  forward = torch.compile(model) if compile else model
  forward(torch.ones(2, 1, 8, 8)).sum().backward()
  torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
  optimizer.step()


def torch_available() -> bool:
  return importlib.util.find_spec('torch') is not None


# --------------------------------------------------------------------------------------- JAX


@dataclasses.dataclass
class JaxSetup:
  """A config's experiment with fresh state, a compiled step, and its two batch feeds."""

  config: Any
  experiment: Any
  state: Any
  key: Any
  step_fn: Any  # the compiled train step
  resident_batch: dict
  train_iter: Any
  compile_seconds: float
  synthetic_data: str  # '' or why the data is synthetic
  memory_baseline: dict = dataclasses.field(default_factory=dict)  # see setup_jax

  def step(self, batch) -> float:
    """One train step on `batch`, timed to completion, in ms."""
    import jax
    start = time.perf_counter()
    self.state, metrics = self.step_fn(self.state, batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) * 1e3

  def resident_step(self) -> float:
    return self.step(self.resident_batch)

  def block(self, steps: int, pipeline: bool) -> float:
    """ms per step over `steps` steps dispatched as the trainer does, timed to the last one's end.

    The trainer's batches are read and copied to the device by grain's prefetch threads while
    the step computes (`data.device_prefetch`), and with asynchronous dispatch
    (train.reuse_step_buffers off) the step returns before it is done, the one-step-late
    finiteness check waiting only for step t - 1. Timing whole blocks measures what that
    overlap leaves.
    """
    import jax

    start = time.perf_counter()
    metrics = None
    for _ in range(steps):
      batch = next(self.train_iter) if pipeline else self.resident_batch
      self.state, step_metrics = self.step_fn(self.state, batch, self.key)
      if metrics is not None:
        bool(metrics['finite'])
      metrics = step_metrics
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) * 1e3 / steps

  def pipeline_step(self) -> float:
    """next() from the device-prefetching grain iterator, the step: the trainer's loop body."""
    import jax

    start = time.perf_counter()
    batch = next(self.train_iter)
    self.state, metrics = self.step_fn(self.state, batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) * 1e3


def synthetic_source(config, reason: str):
  """Random uint8 images of the config's data.image_size and data.channels."""
  import numpy as np

  from jvae.data import sources
  size, channels = int(config.data.image_size), int(config.data.channels)
  if not size or not channels:
    raise sources.DataError(f'{reason}; and without data.image_size and data.channels set the '
                            'bench cannot make stand-in images')
  rng = np.random.default_rng(config.seed)
  count = max(4 * config.train.batch_size, 256)
  images = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
  num_classes = config.model.num_classes if config.model.conditioning != 'none' else 0
  labels = rng.integers(0, max(num_classes, 1), count) if num_classes else None
  info = sources.SourceInfo(image_shape=(size, size, channels), num_classes=num_classes)
  return sources.ArraySource('synthetic', images, labels, info)


def make_experiment(config):
  """(experiment, why the data is synthetic or ''), opening the config's data if it can."""
  from jvae import trainer
  from jvae.data import sources
  try:
    return trainer.create_experiment(config), ''
  except sources.DataError as e:
    reason = str(e).split('\n')[0]
    source = synthetic_source(config, reason)
    experiment = trainer.create_experiment(config, image_shape=source.info.image_shape,
                                           open_data=False)
    experiment.train_source = experiment.eval_source = source
    return experiment, f'synthetic data ({reason[:120]})'


def setup_jax(config, measure_memory: bool = False) -> JaxSetup:
  """Builds the experiment and state, and compiles the train step (timed).

  With `measure_memory`, the memory baseline (`memory_baseline` after `warm_up_jax`) is taken
  once the data is open, the input pipeline has made its first batch and the XLA client is up,
  before any parameter exists: the torch twin's memory run holds no dataset, so only what the
  model costs (parameters, optimizer state, the compiled step and its buffers) is counted past it.
  """
  import jax

  from jvae import compiled_step, prng
  from jvae.data import pipeline
  experiment, synthetic = make_experiment(config)
  key = prng.root_key(config.seed, config)
  train_iter = pipeline.train_iterator(
      experiment.train_source, config.data, config.train.batch_size, config.seed,
      to_device=experiment.global_batch)
  resident = next(train_iter)
  shed = bool(config.train.shed_compiler_memory)
  baseline = (memory_baseline(functools.partial(warm_up_jax, clear_caches=shed))
              if measure_memory else {})
  state = experiment.init_state(jax.random.fold_in(key, 0))
  step_key = jax.random.fold_in(key, 1)
  start = time.perf_counter()
  compiled = experiment.train_step.lower(state, resident, step_key).compile()
  compile_seconds = time.perf_counter() - start
  if shed:  # as the trainer's CompiledStep does
    compiled_step.shed_compiler_memory()
  if measure_memory:
    # As the trainer does after its first step: hand the compiler's freed memory back, then
    # measure the steps' peak apart from the compile's.
    baseline['compile_peak_rss_mb'] = peak_rss_mb()
    host_memory.release_freed_memory()
    baseline['steps_peak_reset'] = reset_peak_rss()
  return JaxSetup(config, experiment, state, step_key, compiled, resident, train_iter,
                  compile_seconds, synthetic, baseline)


def alternated(runners: dict[str, Callable[[], float]], rounds: int,
               block: int = 1) -> dict[str, list[float]]:
  """Each runner's results (a step's ms) over `rounds` rounds, rotating who goes first so that
  no variant always follows the same one and all see the same load.

  In a round each runner is called `block` times in a row; with block > 1 the first call of each
  block is a transition step, run but not kept (see `_FRAMEWORK_BLOCK`), so a runner keeps
  (block - 1) results per round.
  """
  times: dict[str, list[float]] = {name: [] for name in runners}
  names = list(runners)
  for i in range(rounds):
    for name in names[i % len(names):] + names[:i % len(names)]:
      results = [runners[name]() for _ in range(block)]
      times[name].extend(results[1:] if block > 1 else results)
  return times


# JAX and the torch twin alternate in blocks of this many steps, the first of each not timed.
# torch's OpenMP runtime (GNU libgomp, its default wait policy) keeps its threads spinning for a
# while after a parallel region, on the 2 cores the next JAX step needs: alternating single
# steps timed the JAX step after a torch step, not JAX's steady state. configs/default.py on a
# 2-core Zen 5 EPYC, in one process (median ms/step of JAX / torch eager / torch.compile): back to
# back 6.8 ms JAX; alternating single steps 11.2 / 9.9 / 10.0; blocks of 3 steps 8.6 / 8.1 /
# 9.5; blocks of 6, 6.96 / 8.49 / 9.60; mnist_cvae_onehot 49.4 / 41.3 / 47.2 single, 43.7 /
# 41.2 / 46.3 in blocks of 6 (torch's own times barely move). OMP_WAIT_POLICY=PASSIVE removed
# the interference too, but slowed torch's own steps (eager 10.8 -> 14.4 ms), and a sleep
# between steps slowed both (idle cores); BENCHMARKS.md, tenth session.
_FRAMEWORK_BLOCK = 6


def _median(values: list[float]) -> float:
  return float(statistics.median(values)) if values else float('nan')


def _pipeline_overhead(jax_setup: JaxSetup, steps: int) -> dict[str, float]:
  """Pipeline-fed against device-resident steps, in pairs of blocks of `_PIPELINE_BLOCK` steps.

  Each block runs like the trainer's loop (`JaxSetup.block`); the pairs alternate which block
  goes first, until `steps` steps of each have run. Returns the median ms/step of each kind,
  the overhead (median pipeline-fed block over median resident block, minus 1, in %) and the
  quartiles of the pairs' own overheads, which show how far one run's figure can be trusted.
  """
  block = max(1, min(_PIPELINE_BLOCK, steps))
  piped, resident, pairs = [], [], []
  done = 0
  while done < steps:
    n = min(block, steps - done)
    if len(pairs) % 2:
      resident.append(jax_setup.block(n, pipeline=False))
      piped.append(jax_setup.block(n, pipeline=True))
    else:
      piped.append(jax_setup.block(n, pipeline=True))
      resident.append(jax_setup.block(n, pipeline=False))
    pairs.append((piped[-1] / resident[-1] - 1.0) * 100.0)
    done += n
  q1, _, q3 = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else (pairs[0],) * 3
  return {'pipeline_ms': _median(piped), 'pipeline_resident_ms': _median(resident),
          'pipeline_overhead_pct': (_median(piped) / _median(resident) - 1.0) * 100.0,
          'pipeline_overhead_q1_pct': q1, 'pipeline_overhead_q3_pct': q3}


# Steps per block of `_pipeline_overhead`: enough that a block spans the prefetch thread's
# hand-offs, few enough for many pairs. One run's 30-step figure (6 pairs) moved by ~10 points
# between runs (BENCHMARKS.md, tenth session), as much as the 5% it is judged against.
_PIPELINE_BLOCK = 5


def _torch_notes(config) -> list[str]:
  notes = []
  if config.data.binarize != 'none':
    notes.append('dynamic binarization')
  if config.task == 'denoise':
    notes.append(f'corruption {config.corruption.kind}')
  return notes


def _twin_inputs(jax_setup: JaxSetup):
  """The resident batch as the twin's float NCHW (inputs, target) and labels, prepared once."""
  import jax
  import numpy as np
  import torch

  from jvae import steps
  config = jax_setup.config
  inputs, target, labels = jax.jit(
      lambda b, k: steps.prepare_batch(b, k, config))(jax_setup.resident_batch,
                                                      jax.random.key(0))

  def nchw(x):
    return torch.from_numpy(np.array(np.asarray(x, np.float32).transpose(0, 3, 1, 2), order='C'))

  torch_labels = None if labels is None else torch.from_numpy(np.array(labels, np.int64))
  return nchw(inputs), nchw(target), torch_labels


def benchmark_config(spec: str, steps: int = 30, warmup: int = 5, use_torch: bool = False,
                     torch_compile: bool = True, conv_impl: str | None = None,
                     conv_transpose_impl: str | None = None, torch_threads: int = 0,
                     pipeline_steps: int | None = None) -> dict[str, Any]:
  """Times one config in this process; returns the table row as a dict (see module doc)."""
  import jax

  from jvae.train_state import count_parameters
  config = _override(load_config(spec), conv_impl, conv_transpose_impl)
  jax_setup = setup_jax(config, measure_memory=True)
  for _ in range(warmup):
    jax_setup.resident_step()
    jax_setup.pipeline_step()
  pipeline_steps = pipeline_steps or steps
  pipeline = _pipeline_overhead(jax_setup, pipeline_steps)
  batch = config.train.batch_size
  row: dict[str, Any] = {
      'config': config_name(spec), 'batch': batch,
      'image_shape': list(jax_setup.experiment.image_shape),
      'params': count_parameters(jax_setup.state.params),
      'conv_impl': config.model.conv_impl,
      'conv_transpose_impl': config.model.conv_transpose_impl,
      'compile_s': jax_setup.compile_seconds,
      **pipeline, 'pipeline_steps': pipeline_steps,
      'steps': steps, 'warmup': warmup, 'jax_version': jax.__version__,
      'notes': [jax_setup.synthetic_data] if jax_setup.synthetic_data else [],
  }
  # Before torch is imported: this process's memory is JAX's alone up to here.
  memory = memory_since(jax_setup.memory_baseline)
  # memory_since's peak is the steps' since setup_jax reset it after the compile.
  baseline_mb = memory['baseline_rss_mb']
  peak_mb = max(memory['peak_rss_mb'], jax_setup.memory_baseline['compile_peak_rss_mb'])
  row.update(jax_peak_rss_mb=peak_mb, jax_baseline_rss_mb=baseline_mb,
             jax_model_mb=peak_mb - baseline_mb,
             jax_steps_model_mb=memory['peak_rss_mb'] - baseline_mb,
             jax_warm_up_mb=memory['warm_up_mb'])
  if not (memory['peak_reset'] and jax_setup.memory_baseline['steps_peak_reset']):
    row['notes'].append(_NO_PEAK_RESET)

  runners = {'jax': jax_setup.resident_step}
  if use_torch:
    twin_runners, twin_info = _torch_runners(jax_setup, warmup, torch_compile, torch_threads)
    runners.update(twin_runners)
    row.update(twin_info)
  block = _FRAMEWORK_BLOCK if len(runners) > 1 else 1
  times = alternated(runners, -(-steps // max(block - 1, 1)), block)
  row['jax_ms'] = _median(times['jax'])
  row['jax_img_s'] = batch / row['jax_ms'] * 1e3
  for name in ('torch_eager', 'torch_compile'):
    if name in times:
      row[f'{name}_ms'] = _median(times[name])
      row[f'jax_over_{name}'] = row['jax_ms'] / row[f'{name}_ms']
  return row


_NO_PEAK_RESET = ('peak RSS could not be reset at the baseline (no /proc/self/clear_refs): '
                  'model memory may include a peak from before it')


def torch_memory(spec: str, variant: str, image_shape: tuple[int, int, int], steps: int = 30,
                 warmup: int = 5, torch_threads: int = 0) -> dict[str, Any]:
  """The twin's memory in this process: `warmup` + `steps` train steps, eager or compiled.

  For a fresh process of its own (`--torch_memory`). The twin keeps torch's own initialisation
  and trains on random batches of the config's shape: loading JAX weights would bring up JAX
  (its client, the init computation) in the process being measured, and the values change
  neither the memory nor the time of a step. The baseline is taken after torch, the twin's code
  (which imports jvae.models, hence flax and JAX) and the batch exist and `warm_up_torch` has
  run, before the twin is built.
  """
  import torch

  from jvae import torch_twin
  assert variant in ('eager', 'compile'), variant
  config = load_config(spec)
  result: dict[str, Any] = {'config': config_name(spec), 'variant': variant}
  try:
    torch_twin.check_supported(config.model)
  except torch_twin.UnsupportedModel as e:
    return {**result, 'error': f'no twin: {e}'}
  if torch_threads:
    torch.set_num_threads(torch_threads)
  torch.manual_seed(config.seed)
  height, width, channels = (int(d) for d in image_shape)
  shape = (config.train.batch_size, channels, height, width)
  x, target = torch.rand(shape), torch.rand(shape)
  labels = (torch.randint(0, config.model.num_classes, shape[:1])
            if config.model.conditioning != 'none' else None)
  beta = 1.0
  baseline = memory_baseline(lambda: warm_up_torch(variant == 'compile'))
  twin = torch_twin.build_twin(config.model, (height, width, channels))
  trainer = torch_twin.TwinTrainer(twin, config, compile=variant == 'compile')
  # As in the timing run: the compiled form's first step compiles, even without warm-up.
  runs = warmup + steps if variant == 'eager' else max(warmup, 1) + steps
  try:
    for _ in range(runs):
      trainer.step(x, target, labels, beta)
  except Exception as e:  # noqa: BLE001 - a missing compiler etc.: report it in the row
    return {**result, 'error': f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'}
  result.update(memory_since(baseline), steps=runs, torch_threads=torch.get_num_threads())
  try:
    from jax._src import xla_bridge  # private, hence guarded: only a sanity flag
    result['jax_backend_initialized'] = bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    pass
  return result


def add_torch_memory(row: dict[str, Any], variant: str, memory: dict[str, Any]) -> None:
  """Merges a `torch_memory` result into the config's row, with JAX's ratio to it."""
  name = f'torch_{variant}'
  if 'error' in memory:
    row.setdefault('notes', []).append(f'{name} memory run failed: {memory["error"]}')
    return
  row[f'{name}_peak_rss_mb'] = memory['peak_rss_mb']
  row[f'{name}_baseline_rss_mb'] = memory['baseline_rss_mb']
  row[f'{name}_model_mb'] = memory['model_mb']
  row[f'{name}_warm_up_mb'] = memory['warm_up_mb']
  if not memory.get('peak_reset', True) and _NO_PEAK_RESET not in row.get('notes', []):
    row.setdefault('notes', []).append(_NO_PEAK_RESET)
  if memory.get('jax_backend_initialized'):
    # Would put JAX's runtime in the twin's model MB; torch_memory is meant not to start it.
    row.setdefault('notes', []).append(f'{name} memory run started the JAX backend')
  if 'jax_model_mb' in row and memory['model_mb'] > 0:
    row[f'jax_model_over_{name}_model'] = row['jax_model_mb'] / memory['model_mb']
    row[f'jax_steps_model_over_{name}_model'] = row['jax_steps_model_mb'] / memory['model_mb']


def _torch_runners(jax_setup: JaxSetup, warmup: int, torch_compile: bool,
                   torch_threads: int = 0):
  """Step functions (returning ms) of the twin, eager and compiled, after their warm-up."""
  import jax

  from jvae import torch_twin
  info: dict[str, Any] = {}
  config = jax_setup.config
  try:
    import torch
    twin = torch_twin.build_twin(config.model, jax_setup.experiment.image_shape)
  except torch_twin.UnsupportedModel as e:
    info['twin'] = f'no twin: {e}'
    return {}, info
  if torch_threads:
    torch.set_num_threads(torch_threads)
  info['torch_version'] = torch.__version__
  info['torch_threads'] = torch.get_num_threads()
  params = jax.device_get(jax_setup.state.params)
  stats = jax.device_get(jax_setup.state.batch_stats)
  torch_twin.load_jax_params(twin, params, stats)
  x, target, labels = _twin_inputs(jax_setup)
  beta = float(jax_setup.experiment.beta_fn(0))
  eager = torch_twin.TwinTrainer(twin, config)
  notes = _torch_notes(config)
  if notes:
    info['torch_leaves_out'] = notes

  def timed(trainer):
    def run() -> float:
      start = time.perf_counter()
      trainer.step(x, target, labels, beta)
      return (time.perf_counter() - start) * 1e3
    return run

  runners = {'torch_eager': timed(eager)}
  for _ in range(warmup):
    runners['torch_eager']()
  if torch_compile:
    # Shares the twin and its optimizer with the eager trainer: one model, two step forms.
    compiled = torch_twin.TwinTrainer(twin, config, compile=True, optimizer=eager.optimizer)
    start = time.perf_counter()
    try:
      compiled.step(x, target, labels, beta)
    except Exception as e:  # noqa: BLE001 - a missing compiler etc.: report, keep the eager row
      info['torch_compile_error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
    else:
      info['torch_compile_first_step_s'] = time.perf_counter() - start
      runners['torch_compile'] = timed(compiled)
      for _ in range(max(warmup - 1, 0)):
        runners['torch_compile']()
  info['twin'] = 'yes'
  return runners, info


# ------------------------------------------------------------------------------------- check


def _tree_paths(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_tree_paths(value, f'{prefix}/{key}'))
    else:
      out[f'{prefix}/{key}'] = value
  return out


def _rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(a), 1e-12)


def _global_norm(tree: dict) -> float:
  import numpy as np
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in tree.values()))


def _twin_gradients(twin, x, target, labels, beta: float, loss_config, dtype=None) -> dict:
  """{jvae parameter path: gradient} of the twin's train-mode loss with z = mu, computed on a
  copy of the twin (in `dtype` if given), so the twin's own state is untouched."""
  import copy

  import torch

  from jvae import torch_twin
  clone = copy.deepcopy(twin)
  if dtype is not None:
    clone = clone.to(dtype)
    x, target = x.to(dtype), target.to(dtype)
  clone.train()
  clone.zero_grad(set_to_none=True)
  loss, _ = torch_twin.objective(clone(x, labels, sample=False), target, beta, loss_config)
  loss.backward()
  with torch.no_grad():
    for p in clone.parameters():
      p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
  return _tree_paths(torch_twin.export_params(clone)[0])


def check_config(spec: str, steps: int = 3, conv_impl: str | None = None,
                 conv_transpose_impl: str | None = None) -> dict[str, Any]:
  """The twin against the JAX model for one config (dropout_rate forced to 0).

  1. The deterministic loss (z = mu; BatchNorm on batch statistics, and again on the running
     averages) of both models from the same weights on the same batch: relative difference
     <= LOSS_RTOL.
  2. The gradient of that loss (batch statistics) in JAX and in the twin, float32 and float64:
     JAX's distance from the float64 gradient within FLOAT64_FACTOR times the float32 twin's
     (or GRAD_FLOOR), relative to the gradient's norm, over all parameters.
  3. `steps` real jitted train steps against the twin's steps (float32 and float64) on the same
     batches, the twin replaying the JAX step's latent draw (eps), lr and beta: the first loss
     within LOSS_RTOL, later ones and the parameters after the steps as close to the float64
     run as the float32 twin is (FLOAT64_FACTOR; UPDATE_FLOOR of the update's norm).

  Returns a dict of the measured differences with 'ok' and 'failures'.
  """
  import copy

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from jvae import losses, schedules, torch_twin
  from jvae import steps as steps_lib
  config = _override(load_config(spec), conv_impl, conv_transpose_impl)
  result: dict[str, Any] = {'config': config_name(spec), 'conv_impl': config.model.conv_impl,
                            'conv_transpose_impl': config.model.conv_transpose_impl}
  if config.model.dropout_rate > 0:
    result['dropout_rate'] = f'{config.model.dropout_rate} -> 0 for the check'
    config.model.dropout_rate = 0.0
  try:
    torch_twin.check_supported(config.model)
  except torch_twin.UnsupportedModel as e:
    result.update(status='skipped', reason=f'no twin: {e}', ok=True)
    return result
  torch.manual_seed(0)
  jax_setup = setup_jax(config)
  experiment, model = jax_setup.experiment, jax_setup.experiment.model
  if jax_setup.synthetic_data:
    result['data'] = jax_setup.synthetic_data
  twin = torch_twin.build_twin(config.model, experiment.image_shape)
  state = jax_setup.state
  params0 = jax.device_get(state.params)
  stats0 = jax.device_get(state.batch_stats)
  torch_twin.load_jax_params(twin, params0, stats0)
  p0 = _tree_paths(jax.tree.map(np.asarray, params0))

  def nchw(x):
    return torch.from_numpy(np.array(np.asarray(x, np.float32).transpose(0, 3, 1, 2), order='C'))

  def torch_labels(labels):
    return None if labels is None else torch.from_numpy(np.array(labels, np.int64))

  batches = [jax_setup.resident_batch] + [
      next(jax_setup.train_iter) for _ in range(max(steps - 1, 0))]
  prepare = jax.jit(lambda b, k: steps_lib.prepare_batch(b, k, config))

  # 1. The deterministic loss from the same weights.
  inputs, target, labels = prepare(batches[0], jax.random.key(1))
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  beta = float(experiment.beta_fn(0))
  losses_found = {}
  # Eval mode first: a train-mode torch BatchNorm updates its running statistics even under
  # no_grad (they are reloaded below).
  for mode in ('eval', 'train') if config.model.norm == 'batch' else ('train',):
    train = mode == 'train'
    kwargs = {'mutable': ['batch_stats']} if train else {}
    out = model.apply(variables, inputs, labels, train=train, sample=False, **kwargs)
    out = out[0] if train else out
    jax_loss = float(losses.objective(out, target, jnp.float32(beta), config.loss)[0])
    twin.train(train)
    with torch.no_grad():
      t_out = twin(nchw(inputs), torch_labels(labels), sample=False)
      torch_loss = float(torch_twin.objective(t_out, nchw(target), beta, config.loss)[0])
    losses_found[mode] = (jax_loss, torch_loss)
    result[f'{mode}_loss_jax'] = jax_loss
    result[f'{mode}_loss_torch'] = torch_loss
    result[f'{mode}_loss_rel_diff'] = _rel(jax_loss, torch_loss)
  torch_twin.load_jax_params(twin, params0, stats0)
  twin.train(True)

  # 2. Gradients of the train-mode deterministic loss: JAX's and the twin's in float32, both
  # measured against the twin's in float64.
  def jax_loss_fn(params):
    out = model.apply({**variables, 'params': params}, inputs, labels, train=True,
                      sample=False, mutable=['batch_stats'])[0]
    return losses.objective(out, target, jnp.float32(beta), config.loss)[0]

  g_jax = _tree_paths(jax.tree.map(np.asarray, jax.grad(jax_loss_fn)(state.params)))
  twin_inputs = (nchw(inputs), nchw(target), torch_labels(labels), beta, config.loss)
  g32 = _twin_gradients(twin, *twin_inputs)
  g64 = _twin_gradients(twin, *twin_inputs, dtype=torch.float64)
  norm64 = _global_norm({k: g64[k] for k in g64})
  result['grad_rel_diff'] = _global_norm({k: g_jax[k] - g32[k] for k in g_jax}) / norm64
  result['grad_err_vs_float64_jax'] = _global_norm({k: g_jax[k] - g64[k] for k in g_jax}) / norm64
  result['grad_err_vs_float64_torch'] = _global_norm({k: g32[k] - g64[k] for k in g32}) / norm64

  # 3. Real train steps against the twin replaying their draws, and against a float64 copy of
  # the twin: the float32 noise floor.
  trainer = torch_twin.TwinTrainer(twin, config)
  twin64 = copy.deepcopy(twin).to(torch.float64)
  trainer64 = torch_twin.TwinTrainer(twin64, config)
  schedule = schedules.learning_rate_schedule(config.train)
  step_losses = []
  for t, batch in enumerate(batches[:steps]):
    step_key = jax.random.fold_in(jax_setup.key, t)
    latent_key, _, corruption_key = jax.random.split(step_key, 3)
    inputs, target, labels = prepare(batch, corruption_key)
    eps = None
    if config.model.kind == 'vae':
      # The VAE draws from make_rng('latent'), which flax derives from the stream's key; the
      # same call at the root scope derives the same key.
      draw_key = model.apply({}, rngs={'latent': latent_key},
                             method=lambda module: module.make_rng('latent'))
      eps = torch.from_numpy(np.array(jax.random.normal(
          draw_key, (inputs.shape[0], config.model.latent_dim), jnp.float32)))
    beta_t, lr_t = float(experiment.beta_fn(t)), float(schedule(t))
    jax_setup.state, metrics = jax_setup.step_fn(jax_setup.state, batch, jax_setup.key)
    x, y, lab = nchw(inputs), nchw(target), torch_labels(labels)
    torch_loss = float(trainer.step(x, y, lab, beta_t, lr_t, eps))
    loss64 = float(trainer64.step(x.double(), y.double(), lab, beta_t, lr_t,
                                  None if eps is None else eps.double()))
    step_losses.append((float(metrics['loss']), torch_loss, loss64))
  result['step_losses_jax_torch_float64'] = step_losses
  result['step_loss_max_rel_diff'] = max((_rel(a, b) for a, b, _ in step_losses), default=0.0)
  failures = []
  for mode, (a, b) in losses_found.items():
    if _rel(a, b) > LOSS_RTOL:
      failures.append(f'{mode}-mode loss {a:.7g} vs {b:.7g}')
  for t, (a, b, c) in enumerate(step_losses):
    # Step 0 starts from the same weights; later steps may drift as far from the float64 run
    # as the float32 twin does.
    allowed = LOSS_RTOL if t == 0 else max(LOSS_RTOL, FLOAT64_FACTOR * _rel(c, b))
    if _rel(a, b) > LOSS_RTOL and _rel(c, a) > allowed:
      failures.append(f'step {t} loss: JAX {a:.7g}, torch {b:.7g}, torch float64 {c:.7g}')
  if result['grad_err_vs_float64_jax'] > max(
      FLOAT64_FACTOR * result['grad_err_vs_float64_torch'], GRAD_FLOOR):
    failures.append(f'JAX gradient {result["grad_err_vs_float64_jax"]:.1e} from the float64 '
                    f'one, float32 torch {result["grad_err_vs_float64_torch"]:.1e}')
  if steps:
    p_jax = _tree_paths(jax.tree.map(np.asarray, jax.device_get(jax_setup.state.params)))
    t_params, t_stats = torch_twin.export_params(twin)
    p_torch = _tree_paths(t_params)
    p64 = _tree_paths(torch_twin.export_params(twin64)[0])
    if set(p_jax) != set(p_torch):
      raise AssertionError(f'parameter trees differ: {sorted(set(p_jax) ^ set(p_torch))}')
    update64 = _global_norm({k: p64[k] - p0[k] for k in p64})
    result['update_rel_diff'] = _global_norm(
        {k: p_jax[k] - p_torch[k] for k in p_jax}) / max(update64, 1e-30)
    result['update_err_vs_float64_jax'] = _global_norm(
        {k: p_jax[k] - p64[k] for k in p_jax}) / max(update64, 1e-30)
    result['update_err_vs_float64_torch'] = _global_norm(
        {k: p_torch[k] - p64[k] for k in p_torch}) / max(update64, 1e-30)
    per_leaf = {k: float(np.linalg.norm(p_jax[k] - p_torch[k]) / max(
        np.linalg.norm(p64[k] - p0[k]), 1e-30)) for k in p_jax}
    worst = sorted(per_leaf, key=per_leaf.get, reverse=True)[:3]
    result['update_rel_diff_worst_leaves'] = {k: per_leaf[k] for k in worst}
    result['lr'] = float(config.train.learning_rate)
    if t_stats:
      s_jax = _tree_paths(jax.tree.map(np.asarray, jax.device_get(jax_setup.state.batch_stats)))
      s_torch = _tree_paths(t_stats)
      # Relative to each statistic's size; torch updates running variances with the unbiased
      # batch variance, flax with the biased one.
      result['batch_stats_rel_diff'] = max(
          float(np.linalg.norm(s_jax[p] - s_torch[p]) / max(np.linalg.norm(s_jax[p]), 1e-12))
          for p in s_jax)
    if result['update_err_vs_float64_jax'] > max(
        FLOAT64_FACTOR * result['update_err_vs_float64_torch'], UPDATE_FLOOR):
      failures.append(f'JAX parameter updates {result["update_err_vs_float64_jax"]:.1e} from the '
                      f'float64 ones, float32 torch {result["update_err_vs_float64_torch"]:.1e}')
  result.update(status='ok' if not failures else 'FAILED', failures=failures,
                ok=not failures)
  return result


# ------------------------------------------------------------------------------------ output


def _pipeline_cell(row: dict[str, Any]) -> str:
  """The overhead with the quartiles of its block pairs, e.g. '4.2 (1.0..9.8)'."""
  cell = _fmt(row['pipeline_overhead_pct'])
  if 'pipeline_overhead_q1_pct' in row:
    cell += (f' ({_fmt(row["pipeline_overhead_q1_pct"])}..'
             f'{_fmt(row["pipeline_overhead_q3_pct"])})')
  return cell


def _fmt(value, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '–'
  if isinstance(value, float):
    return f'{value:,.{digits}f}'
  return f'{value:,}' if isinstance(value, int) else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
  """The benchmark rows as a Markdown table, with the notes below it."""
  header = ('| config | batch | image | params | JAX ms/step | JAX img/s | compile s | '
            'pipeline overhead % | torch eager ms/step | torch.compile ms/step | '
            'JAX ÷ eager | JAX ÷ compile | JAX peak RSS MB | JAX model MB | '
            'JAX model MB after compile | torch eager model MB | torch.compile model MB | '
            'JAX ÷ eager memory | JAX ÷ compile memory | after compile: JAX ÷ compile memory |')
  columns = header.count(' | ') + 1
  lines = [header, '|' + '---|' * columns]
  notes = []
  for row in rows:
    if 'error' in row:
      lines.append(f'| {row["config"]} | ' + ' | '.join(['–'] * (columns - 1)) + ' |')
      notes.append(f'{row["config"]}: failed: {row["error"]}')
      continue
    shape = 'x'.join(str(d) for d in row['image_shape'])
    lines.append('| ' + ' | '.join([
        row['config'], _fmt(row['batch']), shape, _fmt(row['params']), _fmt(row['jax_ms']),
        _fmt(row['jax_img_s'], 0), _fmt(row['compile_s']), _pipeline_cell(row),
        _fmt(row.get('torch_eager_ms')), _fmt(row.get('torch_compile_ms')),
        _fmt(row.get('jax_over_torch_eager'), 2), _fmt(row.get('jax_over_torch_compile'), 2),
        _fmt(row['jax_peak_rss_mb'], 0), _fmt(row.get('jax_model_mb'), 0),
        _fmt(row.get('jax_steps_model_mb'), 0),
        _fmt(row.get('torch_eager_model_mb'), 0), _fmt(row.get('torch_compile_model_mb'), 0),
        _fmt(row.get('jax_model_over_torch_eager_model'), 2),
        _fmt(row.get('jax_model_over_torch_compile_model'), 2),
        _fmt(row.get('jax_steps_model_over_torch_compile_model'), 2)]) + ' |')
    row_notes = list(row.get('notes', []))
    if row.get('twin', 'yes') != 'yes':
      row_notes.append(row['twin'])
    if row.get('torch_leaves_out'):
      row_notes.append('the torch twin leaves out ' + ', '.join(row['torch_leaves_out']))
    if row.get('torch_compile_error'):
      row_notes.append('torch.compile failed: ' + row['torch_compile_error'])
    if row_notes:
      notes.append(f'{row["config"]}: ' + '; '.join(row_notes))
  impls = sorted({(r.get('conv_impl'), r.get('conv_transpose_impl')) for r in rows
                  if 'error' not in r})
  lines.append('')
  lines.append('conv_impl / conv_transpose_impl: ' + ', '.join(f'{a}/{b}' for a, b in impls))
  reuse = sorted({str(r.get('reuse_step_buffers', '–')) for r in rows if 'error' not in r})
  lines.append('')
  lines.append('train.reuse_step_buffers in effect (the JAX processes): ' + ', '.join(reuse))
  lines.append('')
  lines.append('Medians of per-step wall times (each step run to completion) after warm-up; JAX '
               f'and torch steps alternate in blocks of {_FRAMEWORK_BLOCK} steps, the first of '
               "each untimed (torch's OpenMP threads spin on after its steps)."
               ' JAX ÷ eager/compile: JAX ms/step over torch ms/step '
               '(> 1: JAX is slower). compile s: lower + compile of the JAX train step. Pipeline '
               'overhead: grain-fed blocks of steps (dispatched as the trainer does) over '
               'device-resident-batch blocks, minus 1 (in brackets: the quartiles of the '
               'block pairs\' own overheads). Memory, each framework in a fresh '
               'process of its own (torch: one per form): JAX peak RSS is the whole process\'s '
               'peak (VmHWM) after warm-up and the timed steps; model MB is that peak minus the '
               'RSS once the framework, the model code and the input batch (JAX: and the data) '
               'are loaded and a throwaway one-conv train step (torch.compile: compiled) has '
               'run, before any parameter exists: parameters, optimizer state, activations, '
               'compiled code or autograd graphs. The torch processes import JAX too (the twin '
               'imports jvae.models), which the subtraction removes. JAX ÷ eager/compile '
               'memory: JAX model MB over torch model MB. JAX model MB after compile: the peak '
               'of the warm-up and timed steps alone, after the compiler\'s freed memory is '
               'returned and, with train.shed_compiler_memory, JAX\'s caches cleared (as the '
               'trainer does after its first step; the baseline is then taken with the '
               'warm-up\'s caches cleared too), minus the same baseline: what a run that loads '
               'its step from train.compilation_cache_dir peaks at.')
  if notes:
    lines.append('')
    lines.extend(f'- {note}' for note in notes)
  return '\n'.join(lines) + '\n'


def environment_line(rows: list[dict[str, Any]]) -> str:
  """What the numbers were measured on: versions, CPU, steps."""
  import platform
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  ok = [r for r in rows if 'error' not in r]
  versions = [f'jax {ok[0]["jax_version"]}' if ok else '']
  torch_versions = sorted({r['torch_version'] for r in ok if 'torch_version' in r})
  if torch_versions:
    threads = sorted({r['torch_threads'] for r in ok if 'torch_threads' in r})
    versions.append(f'torch {", ".join(torch_versions)} ({"/".join(map(str, threads))} '
                    'threads)')
  steps = f'{ok[0]["steps"]} timed steps after {ok[0]["warmup"]} warm-up' if ok else ''
  return (f'{time.strftime("%Y-%m-%d")}: {", ".join(filter(None, versions))}; {cpu}, '
          f'{os.cpu_count()} CPUs; {steps}')


def format_checks(results: list[dict[str, Any]]) -> str:
  """The --check results as a Markdown table of relative differences (see check_config)."""
  lines = ['| config (conv / conv_transpose impl) | status | loss, same weights (BN batch / '
           'running stats) | gradient: JAX vs torch; vs float64 (JAX / torch) | step losses: '
           'max JAX vs torch | updates after the steps: JAX vs torch; vs float64 (JAX / torch) '
           '| notes |', '|---|---|---|---|---|---|---|']
  for r in results:
    if r.get('status') in ('skipped', 'error'):
      lines.append(f'| {r["config"]} | {r["status"]} | – | – | – | – | '
                   f'{r.get("reason") or r.get("error")} |')
      continue
    loss = f'{r["train_loss_rel_diff"]:.1e}'
    if 'eval_loss_rel_diff' in r:
      loss += f' / {r["eval_loss_rel_diff"]:.1e}'
    notes = list(r.get('failures', []))
    for key in ('dropout_rate', 'data'):
      if key in r:
        notes.append(f'{key}: {r[key]}')
    if 'batch_stats_rel_diff' in r:
      notes.append(f'BN running stats rel diff {r["batch_stats_rel_diff"]:.1e} (torch: unbiased '
                   'variance)')
    updates = '–'
    if 'update_rel_diff' in r:
      updates = (f'{r["update_rel_diff"]:.1e}; {r["update_err_vs_float64_jax"]:.1e} / '
                 f'{r["update_err_vs_float64_torch"]:.1e}')
    lines.append(
        f'| {r["config"]} ({r["conv_impl"]} / {r["conv_transpose_impl"]}) | {r["status"]} | '
        f'{loss} | {r["grad_rel_diff"]:.1e}; {r["grad_err_vs_float64_jax"]:.1e} / '
        f'{r["grad_err_vs_float64_torch"]:.1e} | {r["step_loss_max_rel_diff"]:.1e} | '
        f'{updates} | {"; ".join(notes)} |')
  return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------- CLI


def _single(spec: str) -> dict[str, Any]:
  if FLAGS.torch_memory:
    return torch_memory(spec, FLAGS.torch_memory, tuple(int(d) for d in FLAGS.image_shape),
                        FLAGS.steps, FLAGS.warmup, FLAGS.torch_threads)
  reuse = FLAGS.reuse_step_buffers
  if reuse is None:
    reuse = load_config(spec).train.reuse_step_buffers
  # As the trainer does, before JAX starts; the torch twin timed in this process shares it.
  reused = reuse and host_memory.reuse_step_buffers()
  import jax
  # A cached executable would make the compile time meaningless.
  jax.config.update('jax_enable_compilation_cache', False)
  use_torch = FLAGS.torch if FLAGS.torch is not None else torch_available()
  if FLAGS.check:
    return check_config(spec, FLAGS.check_steps, FLAGS.conv_impl, FLAGS.conv_transpose_impl)
  row = benchmark_config(spec, FLAGS.steps, FLAGS.warmup, use_torch, FLAGS.torch_compile,
                         FLAGS.conv_impl, FLAGS.conv_transpose_impl, FLAGS.torch_threads,
                         FLAGS.pipeline_steps)
  row['reuse_step_buffers'] = reused
  return row


def _run_subprocess(spec: str, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
  args = [sys.executable, '-m', 'jvae.bench', f'--single={spec}', f'--steps={FLAGS.steps}',
          f'--pipeline_steps={FLAGS.pipeline_steps}',
          f'--warmup={FLAGS.warmup}', f'--check_steps={FLAGS.check_steps}',
          f'--torch_threads={FLAGS.torch_threads}',
          '--torch_compile' if FLAGS.torch_compile else '--notorch_compile',
          '--check' if FLAGS.check else '--nocheck', *extra_args]
  if FLAGS.torch is not None:
    args.append('--torch' if FLAGS.torch else '--notorch')
  for name in ('conv_impl', 'conv_transpose_impl'):
    if FLAGS[name].value:
      args.append(f'--{name}={FLAGS[name].value}')
  if FLAGS.reuse_step_buffers is not None:
    args.append('--reuse_step_buffers' if FLAGS.reuse_step_buffers else '--noreuse_step_buffers')
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
  try:
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=FLAGS.timeout)
  except subprocess.TimeoutExpired:
    return {'config': config_name(spec), 'error': f'timed out after {FLAGS.timeout} s',
            'status': 'error', 'ok': False}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  tail = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
  sys.stderr.write(proc.stderr[-4000:])
  return {'config': config_name(spec), 'status': 'error', 'ok': False,
          'error': f'exit {proc.returncode}: ' + ' / '.join(tail)[-300:]}


def main(argv):
  del argv
  if FLAGS.single:
    result = _single(FLAGS.single)
    print(json.dumps(result), flush=True)
    if FLAGS.check and not result.get('ok', False):
      sys.exit(1)
    return
  specs = []
  for spec in FLAGS.configs or default_configs():
    path, arg = _resolve(spec)
    specs.append(f'{path}:{arg}' if arg else str(path))
  use_torch = FLAGS.torch if FLAGS.torch is not None else torch_available()
  results = []
  for spec in specs:
    print(f'# {config_name(spec)} ...', file=sys.stderr, flush=True)
    row = _run_subprocess(spec)
    if not FLAGS.check and use_torch and row.get('twin') == 'yes':
      # One fresh process per variant: in the timing process JAX's peak and the other
      # variant's would hide the smaller ones.
      shape = ','.join(str(d) for d in row['image_shape'])
      for variant in ('eager', 'compile') if FLAGS.torch_compile else ('eager',):
        print(f'# {config_name(spec)}: torch {variant} memory ...', file=sys.stderr, flush=True)
        memory = _run_subprocess(spec, (f'--torch_memory={variant}', f'--image_shape={shape}'))
        add_torch_memory(row, variant, memory)
    results.append(row)
    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
  if FLAGS.check:
    text = format_checks(results)
    print(text)
    failed = [r['config'] for r in results if not r.get('ok', False)]
    if failed:
      print(f'FAILED: {", ".join(failed)}', file=sys.stderr)
      sys.exit(1)
    return
  text = environment_line(results) + '\n\n' + format_table(results)
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  define_flags()
  app.run(main)
