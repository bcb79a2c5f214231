"""Where a config's train step spends its time: the compiled step's XLA ops, slowest first.

  python -m jvae.step_profile --configs configs/lfw_conv_ae.py [--steps 5] [--top 25]
      [--set model.conv_impl=fast --set train.batch_size=32]

Runs the config's compiled train step (the one `jvae.bench` times) a few times under
`jax.profiler.trace`, sums the device time of every XLA op (fusion, dot, convolution, copy, ...)
over the traced steps, and prints one Markdown table per config: ms per step, share of the
step's wall time, the op's result shape, whether it belongs to the forward pass, the backward
pass (autodiff's transpose) or the update, and the model layer it was generated for (from the
op's `op_name` metadata). This is how the layer rewrites of `jvae/models/layers.py` were found:
on XLA:CPU a handful of ops (weight gradients of convolutions, transposes feeding them, patch
buffers) usually take most of the step.

Times depend on machine load, as in `jvae.bench`; shares are steadier than milliseconds.
"""

from __future__ import annotations

import ast
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any

from absl import app, flags

from jvae import bench, host_memory

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (result shape, op_name metadata)} of an optimized HLO module's text."""
  found = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match and match.group(1) not in found:
      op_name = _OP_NAME.search(line)
      found[match.group(1)] = (match.group(2), op_name.group(1) if op_name else '')
  return found


def describe(op_name: str) -> tuple[str, str]:
  """(pass, layer) of an op from its op_name, e.g. 'jit(train_step)/transpose(jvp(VAE))/
  VAE.decode/decoder/ConvTranspose_1/dot_general' -> ('backward',
  'VAE.decode/decoder/ConvTranspose_1/dot_general')."""
  if not op_name:
    return 'other', ''
  phase = ('backward' if 'transpose(jvp(' in op_name else
           'forward' if 'jvp(' in op_name else 'update/other')
  parts = [p for p in op_name.split('/')[1:] if not p.startswith(('jvp(', 'transpose('))]
  return phase, '/'.join(parts)


def trace_op_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
  """(total µs, event count) per event name from the trace `jax.profiler.trace` wrote.

  The trace also holds Python frames and the runtime's own spans (which contain the ops); the
  caller keeps only the names that are instructions of the compiled step.
  """
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    raise RuntimeError(f'jax.profiler.trace wrote no *.trace.json.gz under {trace_dir}')
  with gzip.open(files[0]) as f:
    events = json.load(f)['traceEvents']
  total, count = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get('name', '')
    if event.get('ph') != 'X' or 'dur' not in event:
      continue
    total[name] += event['dur']
    count[name] += 1
  return total, count


def profile_setup(jax_setup: bench.JaxSetup, steps: int = 5) -> dict[str, Any]:
  """Profiles `steps` resident-batch steps of a prepared config; returns the step time and the
  ops, slowest first: {'step_ms', 'ops': [{'op', 'ms_per_step', 'share', 'calls_per_step',
  'shape', 'pass', 'layer'}]}."""
  import jax

  jax_setup.resident_step()  # warm: the first call after compiling pays one-off costs
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        jax_setup.resident_step()
    step_ms = (time.perf_counter() - start) * 1e3 / steps
    total, count = trace_op_times(trace_dir)
  instructions = hlo_instructions(jax_setup.step_fn.as_text())
  ops = []
  for name, micros in total.most_common():
    if name not in instructions:
      continue
    shape, op_name = instructions[name]
    phase, layer = describe(op_name)
    ms = micros / steps / 1e3
    ops.append({'op': name, 'ms_per_step': ms, 'share': ms / step_ms,
                'calls_per_step': count[name] / steps, 'shape': shape, 'pass': phase,
                'layer': layer})
  return {'step_ms': step_ms, 'ops': ops}


def format_profile(name: str, profile: dict[str, Any], top: int) -> str:
  ops = profile['ops']
  by_pass = collections.Counter()
  for op in ops:
    by_pass[op['pass']] += op['ms_per_step']
  lines = [f'### {name}: {profile["step_ms"]:.1f} ms/step under the profiler; XLA ops '
           f'{sum(by_pass.values()):.1f} ms (' +
           ', '.join(f'{k} {v:.1f}' for k, v in by_pass.most_common()) + ')', '',
           '| ms/step | share | op | shape | pass | layer |', '|---|---|---|---|---|---|']
  for op in ops[:top]:
    lines.append(f'| {op["ms_per_step"]:.2f} | {100 * op["share"]:.1f}% | {op["op"]} | '
                 f'`{op["shape"]}` | {op["pass"]} | {op["layer"]} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_list('configs', None, 'Config files (path[:arg]).')
  flags.DEFINE_integer('steps', 5, 'Profiled steps (after one warm-up step).', lower_bound=1)
  flags.DEFINE_integer('top', 25, 'Ops shown per config.', lower_bound=1)
  flags.DEFINE_multi_string('set', [], 'field=value overrides, e.g. --set model.conv_impl=fast.')
  flags.mark_flags_as_required(['configs'])


def apply_assignment(config, assignment: str):
  """A copy of `config` with one `field=value` set: the value read as a Python literal (3,
  True, (1, 2)), else taken as a bare string such as fast; an unknown field raises ConfigError."""
  from jvae import sweep
  field, _, text = assignment.partition('=')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # a bare string such as fast
  return sweep.apply_overrides(config, {field: value})


def main(argv) -> None:
  del argv
  # As the trainer does; one process for all the configs.
  host_memory.apply_reuse_step_buffers(bench.load_config(FLAGS.configs[0]))
  for spec in FLAGS.configs:
    config = bench.load_config(spec)
    for assignment in FLAGS.set:
      config = apply_assignment(config, assignment)
    profile = profile_setup(bench.setup_jax(config), FLAGS.steps)
    print(format_profile(bench.config_name(spec), profile, FLAGS.top) + '\n', flush=True)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
