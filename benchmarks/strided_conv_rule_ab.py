"""In-step A/B of the Conv 'fast' rule: as shipped, against stride > 1 convs run as 'patches'.

Builds each config's train step twice in one process, once with `layers.fast_conv_form` as is
and once with strided convs sent to 'patches', then runs the two alternately (`bench.alternated`:
one step each per round, swapping which goes first) so that both see the same machine load.

  python benchmarks/strided_conv_rule_ab.py configs/lfw_conv_ae.py [more configs] [--rounds 20]

Not part of the test suite. Why it exists: isolated layer timings (conv_forms.py) favoured
'patches' for several encoder convs, and an in-step check is what decides a rule change.
"""

from __future__ import annotations

import argparse
import statistics

from jvae import bench
from jvae.models import layers


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('configs', nargs='+')
  parser.add_argument('--rounds', type=int, default=20)
  args = parser.parse_args()
  shipped = layers.fast_conv_form

  def strided_patches(k, s, cin, cout, out_size=None):
    return 'patches' if s > 1 else shipped(k, s, cin, cout, out_size)

  print('| config | as shipped, median ms | strided -> patches, median ms | ratio |')
  print('|---|---|---|---|')
  for spec in args.configs:
    setups = {'shipped': bench.setup_jax(bench.load_config(spec))}
    layers.fast_conv_form = strided_patches  # read when the step is traced, in setup_jax
    try:
      setups['patches'] = bench.setup_jax(bench.load_config(spec))
    finally:
      layers.fast_conv_form = shipped
    for setup in setups.values():
      setup.resident_step()
    times = bench.alternated({name: setup.resident_step for name, setup in setups.items()},
                             args.rounds)
    shipped_ms, patches_ms = (statistics.median(times[n]) for n in ('shipped', 'patches'))
    print(f'| {bench.config_name(spec)} | {shipped_ms:.1f} | {patches_ms:.1f} | '
          f'{patches_ms / shipped_ms:.2f} |', flush=True)


if __name__ == '__main__':
  main()
