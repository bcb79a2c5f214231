"""In-step A/B of config variants (conv forms, optimizer settings, ...) on configs' train steps.

Builds each config's train step once per variant in one process, then runs them alternately
(`bench.alternated`: one step each per round, rotating which goes first) so that all see the same
machine load. Prints the median ms/step, the compile time and the step's XLA temporaries
(`compiled.memory_analysis()`) per variant. A variant is 'base' (the config as it is) or
overrides joined by '+', each `field=value` as `python -m jvae.step_profile --set` reads it.
Turns on `host_memory.reuse_step_buffers` first, whatever the configs say (every system config
has it on, and the trainer applies it the same way).

  python benchmarks/config_ab.py configs/resnet_vae_fashion_mnist.py [more configs] \
      --variants model.conv_impl=fast_patches,model.conv_impl=fast_low_memory [--rounds 20]
  python benchmarks/config_ab.py configs/restoration_cifar64_stage1.py \
      --variants base,train.log_weight_norms=True

Not part of the test suite: a rule change of the 'fast' forms, or of what the step computes, is
decided in the train step, and this is the measurement.
"""

from __future__ import annotations

import argparse
import statistics

from jvae import host_memory

host_memory.reuse_step_buffers()  # before bench imports JAX's backends, as train.py does

from jvae import bench, step_profile  # noqa: E402


def configured(spec: str, variant: str):
  config = bench.load_config(spec)
  if variant == 'base':
    return config
  for assignment in variant.split('+'):
    config = step_profile.apply_assignment(config, assignment)
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('configs', nargs='+')
  parser.add_argument('--variants', default='base',
                      help="comma-separated variants: 'base' or field=value[+field=value]")
  parser.add_argument('--rounds', type=int, default=20)
  args = parser.parse_args()
  variants = args.variants.split(',')
  print('| config | ' + ' | '.join(f'{v}: median ms / compile s / temp MB' for v in variants)
        + ' |')
  print('|---|' + '---|' * len(variants))
  for spec in args.configs:
    setups = {v: bench.setup_jax(configured(spec, v)) for v in variants}
    for setup in setups.values():
      setup.resident_step()
    times = bench.alternated({v: setup.resident_step for v, setup in setups.items()},
                             args.rounds)
    cells = []
    for v, setup in setups.items():
      temp_mb = setup.step_fn.memory_analysis().temp_size_in_bytes / 2**20
      cells.append(f'{statistics.median(times[v]):.1f} / {setup.compile_seconds:.1f} / '
                   f'{temp_mb:.1f}')
    print(f'| {bench.config_name(spec)} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
  main()
