"""grain pipelines over an image source: the shuffled training stream and the full eval pass.

Batches stay uint8 on the host ({'image': [b, H, W, C] uint8, 'label': [b] int32, and from paired
sources 'input' [b, H, W, C] uint8, ...}); the train and eval steps convert them to floats on the
device, which moves 4x fewer bytes and costs nothing inside the compiled step. 'index' (the
example's position in its split) keys per-example randomness that must not depend on batching,
such as the fixed binarization of a test set.

Multi-host: the global order of examples is fixed by the seed alone, and process p reads only
rows [p * b, (p + 1) * b) of each global batch of G = process_count * b rows. The processes' local
batches of step t, assembled in process order, are then exactly the global batch t a single
process would read, so a run on many hosts draws the same batches as a run on one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f'batch size {global_batch_size} does not divide over {process_count} '
                     'processes')
  return global_batch_size // process_count


def _read_options(data_config: ml_collections.ConfigDict) -> grain.ReadOptions:
  threads = int(data_config.prefetch_threads)
  # num_threads=0 reads each batch when it is asked for, in the thread that asks.
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads * 4)


class _ShuffledOrder:
  """The endless training order: position q is example `permutation(q // n)[q % n]`, a fresh
  permutation of the n examples for every epoch, drawn from (seed, epoch) alone.

  Whole batches of positions are mapped at once. grain's per-record `MapDataset.shuffle` costs
  about 30 us per record in its index shuffle plus about 20 us of per-record dataset overhead:
  7.5 ms of CPU per batch of 64, which on two cores is taken from the train step itself.
  """

  def __init__(self, n: int, seed: int):
    self.n = n
    self.seed = seed
    self._cache: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    order = self._cache.get(epoch)
    if order is None:
      order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
      # Prefetch threads read at most two neighbouring epochs at a time.
      self._cache = {e: o for e, o in self._cache.items() if e >= epoch - 1}
      self._cache[epoch] = order
    return order

  def __call__(self, positions: np.ndarray) -> np.ndarray:
    epochs, offsets = np.divmod(positions, self.n)
    examples = np.empty_like(positions)
    for epoch in np.unique(epochs):
      at = epochs == epoch
      examples[at] = self._permutation(int(epoch))[offsets[at]]
    return examples

  def __getstate__(self) -> dict:
    # Worker processes (data.num_workers) rebuild the cache rather than receive it.
    return {'n': self.n, 'seed': self.seed, '_cache': {}}


@dataclasses.dataclass(frozen=True)
class _LocalRows:
  """This process's rows of each global batch: process p reads rows [p * b, (p + 1) * b) of
  every global batch of process_count * b rows."""

  batch: int
  process_index: int
  process_count: int

  def positions(self, step: int) -> np.ndarray:
    """Global positions of this process's rows of global batch `step`."""
    start = (int(step) * self.process_count + self.process_index) * self.batch
    return np.arange(start, start + self.batch, dtype=np.int64)


class _TrainBatch:
  """Local batch `step` of the training stream: a picklable grain map function."""

  def __init__(self, source, rows: _LocalRows, seed: int):
    self.source = source
    self.rows = rows
    self.order = _ShuffledOrder(len(source), seed)

  def __call__(self, step: int) -> dict:
    return self.source.read_batch(self.order(self.rows.positions(step)))


class _EvalBatch:
  """Local batch `step` of one ordered pass over the source, padded to whole batches."""

  def __init__(self, source, rows: _LocalRows):
    self.source = source
    self.rows = rows

  def __call__(self, step: int) -> dict:
    positions = self.rows.positions(step)
    real = positions < len(self.source)
    batch = self.source.read_batch(np.where(real, positions, 0))
    for values in batch.values():  # padding rows: zeros, as if blank images of class 0
      values[~real] = 0
    batch['index'][~real] = -1
    batch['mask'] = real.astype(np.float32)
    return batch


# Far more batches than any run reads; grain datasets index lazily, so the length costs nothing.
_ENDLESS = 2**62


def train_iterator(source, data_config: ml_collections.ConfigDict, global_batch_size: int,
                   seed: int, process_index: int = 0, process_count: int = 1,
                   to_device: Callable[[dict], Any] | None = None):
  """An endless, reshuffled-every-epoch iterator of local batches with get_state/set_state.

  The order is keyed by `seed` alone (`_ShuffledOrder`), so a restored iterator state continues
  with exactly the batches the interrupted run would have seen. With `to_device` (e.g.
  `lambda b: parallel.global_batch(b, mesh)`) it yields that function's results instead, made
  `data.device_prefetch` batches ahead by a background thread; the state is still that of the
  last batch handed out, not of the ones waiting in the buffer.
  """
  batch = local_batch_size(global_batch_size, process_count)
  if len(source) < global_batch_size:
    raise ValueError(f'the training split has {len(source)} images, fewer than the batch of '
                     f'{global_batch_size}; lower train.batch_size')
  dataset = grain.MapDataset.range(_ENDLESS).map(
      _TrainBatch(source, _LocalRows(batch, process_index, process_count), seed))
  iter_dataset = dataset.to_iter_dataset(_read_options(data_config))
  if data_config.num_workers > 0:
    # grain 0.2.18 reads an absl flag when it starts workers, which raises outside an absl app
    # (notebooks, plain scripts) unless flags count as parsed: google/grain#1355, fixed after
    # that release. Marking them parsed keeps every flag at its default.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=int(data_config.num_workers)))
  return iter(_put_on_device(iter_dataset, data_config, to_device))


def restore_state(iterator, state: dict, data_config: ml_collections.ConfigDict) -> None:
  """`iterator.set_state(state)`, with an error naming the cause when the state does not fit.

  grain's state layout depends on whether worker processes read the data, so a state saved
  with data.num_workers > 0 cannot resume an iterator without them, and the other way round.
  """
  try:
    iterator.set_state(state)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(
        f'the saved data iterator state does not fit this pipeline ({type(e).__name__}: {e}); '
        'resume with the config field data.num_workers the run was saved with (now '
        f'{data_config.num_workers})') from e


def _put_on_device(iter_dataset: grain.IterDataset, data_config: ml_collections.ConfigDict,
                   to_device: Callable[[dict], Any] | None) -> grain.IterDataset:
  """`to_device` applied to every batch, `data.device_prefetch` batches ahead on a thread."""
  if to_device is None:
    return iter_dataset
  iter_dataset = iter_dataset.map(to_device)
  if data_config.device_prefetch > 0:
    iter_dataset = grain.experimental.ThreadPrefetchIterDataset(
        iter_dataset, prefetch_buffer_size=int(data_config.device_prefetch))
  return iter_dataset


def num_eval_batches(num_examples: int, global_batch_size: int, max_batches: int = 0) -> int:
  batches = -(-num_examples // global_batch_size)
  return min(batches, max_batches) if max_batches > 0 else batches


def eval_batches(source, data_config: ml_collections.ConfigDict, global_batch_size: int,
                 max_batches: int = 0, process_index: int = 0, process_count: int = 1,
                 to_device: Callable[[dict], Any] | None = None):
  """One complete, ordered pass over `source` in local batches, the last one padded.

  Every batch has the full local size and a 'mask' [b] float32 that is 1 for real examples and 0
  for padding, so a compiled eval step sees one shape and every example counts exactly once.
  `to_device` as in `train_iterator`.
  """
  batch = local_batch_size(global_batch_size, process_count)
  steps = num_eval_batches(len(source), global_batch_size, max_batches)
  dataset = grain.MapDataset.range(steps).map(
      _EvalBatch(source, _LocalRows(batch, process_index, process_count)))
  return iter(_put_on_device(dataset.to_iter_dataset(_read_options(data_config)), data_config,
                             to_device))


def to_float(images: jnp.ndarray, value_range: str) -> jnp.ndarray:
  """uint8 [..., H, W, C] in [0, 255] -> float32 in [0, 1] ('unit') or [-1, 1] ('symmetric')."""
  x = images.astype(jnp.float32) / 255.0
  return x * 2.0 - 1.0 if value_range == 'symmetric' else x


def to_uint8(images, value_range: str) -> np.ndarray:
  """The inverse of `to_float`, rounded and clipped, for saving and plotting."""
  x = np.nan_to_num(np.asarray(images, np.float32))
  if value_range == 'symmetric':
    x = (x + 1.0) / 2.0
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def value_bounds(value_range: str) -> tuple[float, float]:
  return (-1.0, 1.0) if value_range == 'symmetric' else (0.0, 1.0)
