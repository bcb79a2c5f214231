"""What a config's compiled train step keeps at its memory peak: XLA's temporaries, largest first.

  python benchmarks/step_memory.py configs/lfw_improved_ae.py [--top 30] [--set field=value]

Compiles the config's train step (the one `jvae.bench` times) with XLA's dumps on
(`--xla_dump_to`), reads the buffer assignment (every value in the step's one temporary
allocation, with its size) and the live ranges (the instruction interval each value lives
over), and prints the peak of the summed live sizes, then the values live at it: size, live
range, defining instruction and shape. `compiled.memory_analysis()` gives only the total; this
is how the duplicated BatchNorm activations of the fifteenth session were found
(BENCHMARKS.md). The dump formats are XLA's debugging output, read as jaxlib 0.10.2 writes them.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import re
import shutil
import sys
import tempfile

_DUMP_DIR = tempfile.mkdtemp(prefix='step_memory_')
atexit.register(shutil.rmtree, _DUMP_DIR, ignore_errors=True)
# Before JAX starts its backends, which read XLA_FLAGS once.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' --xla_dump_to={_DUMP_DIR} --xla_dump_hlo_module_re=.*train_step.*')

from jvae import bench, host_memory, step_profile  # noqa: E402

_LIVE_RANGE = re.compile(r'\s+(\S+)\{(.*)\}:(\d+)-(\d+)$')
_SEQUENCE = re.compile(r'\s+(\d+):(\S+)$')
_VALUE = re.compile(r'\s*value: <\d+ (\S+)(?: \{([\d,]*)\})? @\d+> \(size=(\d+),offset=\d+\): (.*)')


def live_temporaries(dump_prefix: str) -> tuple[list[tuple], dict[int, str]]:
  """([(name, shape index, bytes, (first, last) instruction, shape)], {position: instruction})
  for the values of the step's temporary allocation."""
  with open(f'{dump_prefix}-live-range.txt') as f:
    live_range_lines = f.read().splitlines()
  ranges, sequence = {}, {}
  for line in live_range_lines:
    if m := _LIVE_RANGE.match(line):
      ranges[(m[1], m[2])] = (int(m[3]), int(m[4]))
    elif m := _SEQUENCE.match(line):
      sequence[int(m[1])] = m[2]
  values, in_temp = [], False
  with open(f'{dump_prefix}-buffer-assignment.txt') as f:
    for line in f:
      if line.startswith('allocation'):
        in_temp = 'preallocated-temp' in line
      elif in_temp and (m := _VALUE.match(line)):
        live = ranges.get((m[1], m[2] or ''))
        if live is not None:
          values.append((m[1], m[2] or '', int(m[3]), live, m[4]))
  return values, sequence


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('config')
  parser.add_argument('--top', type=int, default=30)
  parser.add_argument('--set', action='append', default=[], help='field=value overrides')
  args = parser.parse_args()
  host_memory.reuse_step_buffers()
  config = bench.load_config(args.config)
  for assignment in args.set:
    config = step_profile.apply_assignment(config, assignment)
  setup = bench.setup_jax(config)
  temp_mb = setup.step_fn.memory_analysis().temp_size_in_bytes / 2**20
  dumps = glob.glob(os.path.join(_DUMP_DIR, '*train_step*cpu_after_optimizations-live-range.txt'))
  if not dumps:
    sys.exit(f'XLA wrote no live ranges under {_DUMP_DIR} (a non-CPU backend?)')
  values, sequence = live_temporaries(max(dumps, key=os.path.getmtime)[:-len('-live-range.txt')])
  usage = [0] * (max(last for *_, (_, last), _ in values) + 1)
  for *_, size, (first, last), _ in values:
    for position in range(first, last + 1):
      usage[position] += size
  peak = max(range(len(usage)), key=usage.__getitem__)
  print(f'{bench.config_name(args.config)}: temporaries {temp_mb:.1f} MB; peak of live values '
        f'{usage[peak] / 2**20:.1f} MB at instruction {peak} ({sequence.get(peak, "?")})\n')
  print('| MB | live (first-last) | value | shape |\n|---|---|---|---|')
  live = sorted((v for v in values if v[3][0] <= peak <= v[3][1]), key=lambda v: -v[2])
  for name, index, size, (first, last), shape in live[:args.top]:
    print(f'| {size / 2**20:.2f} | {first}-{last} | {name}{{{index}}} | `{shape}` |')


if __name__ == '__main__':
  main()
