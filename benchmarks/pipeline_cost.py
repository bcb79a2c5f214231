"""CPU cost per batch of the training input pipeline, by part and by thread setting.

On 2 cores the train step keeps both busy, so every microsecond of CPU the pipeline spends, on
any thread, is taken from the step. This times, for a config's training source and batch:
reading a batch (`read_batch` through the shuffled order), moving it to the devices
(`parallel.global_batch` against plain `jax.device_put`), and whole `train_iterator`s drained
without a train step, per `data.prefetch_threads` / `data.device_prefetch` setting (wall and
process CPU time per batch).

  python benchmarks/pipeline_cost.py [--config configs/default.py] [--batches 500]
      [--settings 0/2,2/2,0/0]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from jvae import bench, parallel
from jvae.data import pipeline


def median_us(fn, repeats: int) -> float:
  fn(0)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    fn(i)
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e6


def drain(experiment, config, threads: int, device_prefetch: int, batches: int):
  """(wall us, CPU us) per batch of a train_iterator read `batches` times with no step."""
  config.data.prefetch_threads = threads
  config.data.device_prefetch = device_prefetch
  iterator = pipeline.train_iterator(experiment.train_source, config.data,
                                     config.train.batch_size, config.seed,
                                     to_device=experiment.global_batch)
  next(iterator)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  if hasattr(iterator, 'close'):
    iterator.close()
  return wall / batches * 1e6, cpu / batches * 1e6


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--batches', type=int, default=500)
  parser.add_argument('--settings', default='0/2,1/2,2/2,0/0',
                      help='prefetch_threads/device_prefetch pairs, each drained twice, '
                           'interleaved')
  args = parser.parse_args()
  config = bench.load_config(args.config)
  experiment, synthetic = bench.make_experiment(config)
  if synthetic:
    print(synthetic)
  batch_fn = pipeline._TrainBatch(  # the function the train iterator maps over batch numbers
      experiment.train_source, pipeline._LocalRows(config.train.batch_size, 0, 1), config.seed)
  batch = batch_fn(0)
  sharding = parallel.data_sharded(experiment.mesh)
  print('| part | median us per batch |\n|---|---|')
  print(f'| read a batch (shuffled order + read_batch) | {median_us(batch_fn, 300):.1f} |')
  print(f'| parallel.global_batch | '
        f'{median_us(lambda _: jax.block_until_ready(experiment.global_batch(batch)), 300):.1f} |')
  print(f'| jax.device_put of the tree | '
        f'{median_us(lambda _: jax.block_until_ready(jax.device_put(batch, sharding)), 300):.1f} |')
  settings = [tuple(int(v) for v in s.split('/')) for s in args.settings.split(',')]
  results = {s: [] for s in settings}
  for _ in range(2):
    for setting in settings:
      results[setting].append(drain(experiment, config, *setting, args.batches))
  print('\n| prefetch_threads / device_prefetch | wall us per batch | CPU us per batch |')
  print('|---|---|---|')
  for (threads, prefetch), runs in results.items():
    walls = ' / '.join(f'{w:.0f}' for w, _ in runs)
    cpus = ' / '.join(f'{c:.0f}' for _, c in runs)
    print(f'| {threads} / {prefetch} | {walls} | {cpus} |')


if __name__ == '__main__':
  main()
