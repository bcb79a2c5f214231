"""In-step A/B of the Conv 'fast' rule for strided convs: as shipped, against every strided conv
the general rules leave native kept native ('native', the rule before 2026-12-02) or sent to
'patches' ('patches').

Builds each config's train step three times in one process, then runs them alternately
(`bench.alternated`: one step each per round, rotating which goes first) so that all see the same
machine load. Applies train.reuse_step_buffers first, as the trainer does.

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

  def strided(form):
    def rule(k, s, cin, cout, out_size=None):
      general = shipped(k, s, cin, cout)  # without out_size: neither grid rule applies
      if s > 1 and general == 'native' and not (out_size and max(out_size) < k):
        return form
      return shipped(k, s, cin, cout, out_size)
    return rule

  variants = ('shipped', 'native', 'patches')
  print('| config | ' + ' | '.join(f'{v}, median ms' for v in variants) + ' |')
  print('|---|' + '---|' * len(variants))
  for spec in args.configs:
    setups = {'shipped': bench.setup_jax(bench.load_config(spec))}
    for form in variants[1:]:
      layers.fast_conv_form = strided(form)  # read when the step is traced, in setup_jax
      try:
        setups[form] = bench.setup_jax(bench.load_config(spec))
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
