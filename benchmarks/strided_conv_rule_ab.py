"""In-step A/B of the Conv 'fast' rule for strided convs: as shipped (every strided conv as
'patches' since 2026-12-02), against the strided convs on grids at least as large as the kernel
kept native ('native').

Builds each config's train step twice in one process, then runs them alternately
(`bench.alternated`: one step each per round, rotating which goes first) so that all see the same
machine load. Turns on `host_memory.reuse_step_buffers` first, whatever the configs say (every
system config has it on, and the trainer applies it the same way).

  python benchmarks/strided_conv_rule_ab.py configs/lfw_conv_ae.py [more configs] [--rounds 20]

Not part of the test suite. Why it exists: isolated layer timings (conv_forms.py) favoured
'patches' for several encoder convs, and an in-step check is what decides a rule change.
"""

from __future__ import annotations

import argparse
import statistics

from jvae import host_memory

host_memory.reuse_step_buffers()  # before bench imports JAX's backends, as train.py does

from jvae import bench  # noqa: E402
from jvae.models import layers  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('configs', nargs='+')
  parser.add_argument('--rounds', type=int, default=20)
  args = parser.parse_args()
  shipped = layers.fast_conv_form

  def strided_native(k, s, cin, cout, out_size=None):
    if s > 1 and not (out_size and max(out_size) < k):
      return 'native'
    return shipped(k, s, cin, cout, out_size)

  variants = ('shipped', 'native')
  print('| config | ' + ' | '.join(f'{v}, median ms' for v in variants) + ' |')
  print('|---|' + '---|' * len(variants))
  for spec in args.configs:
    setups = {'shipped': bench.setup_jax(bench.load_config(spec))}
    layers.fast_conv_form = strided_native  # read when the step is traced, in setup_jax
    try:
      setups['native'] = bench.setup_jax(bench.load_config(spec))
    finally:
      layers.fast_conv_form = shipped
    for setup in setups.values():
      setup.resident_step()
    times = bench.alternated({name: setup.resident_step for name, setup in setups.items()},
                             args.rounds)
    print(f'| {bench.config_name(spec)} | '
          + ' | '.join(f'{statistics.median(times[v]):.1f}' for v in variants) + ' |', flush=True)


if __name__ == '__main__':
  main()
