"""grain pipelines over an image source: the shuffled training stream and the full eval pass.

Batches stay uint8 on the host ({'image': [b, H, W, C] uint8, 'label': [b] int32, and from paired
sources 'input' [b, H, W, C] uint8, ...}); the train and eval steps convert them to floats on the
device, which moves 4x fewer bytes and costs nothing inside the compiled step.

Multi-host: the global order of examples is fixed by the seed alone, and process p reads only
rows [p * b, (p + 1) * b) of each global batch of G = process_count * b rows. The processes' local
batches of step t, assembled in process order, are then exactly the global batch t a single
process would read, so a run on many hosts draws the same batches as a run on one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f'batch size {global_batch_size} does not divide over {process_count} '
                     'processes')
  return global_batch_size // process_count


def _read_options(data_config: ml_collections.ConfigDict) -> grain.ReadOptions:
  threads = int(data_config.prefetch_threads)
  return grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=max(threads, 1) * 4)


def _strip_index(record: dict) -> dict:
  # 'index' (the example's position in its split) keys per-example randomness that must not
  # depend on batching, such as the fixed binarization of a test set.
  batch = {'image': record['image'], 'label': np.int32(record['label']),
            'index': np.int32(record['index'])}
  if 'input' in record:  # the distorted image of a paired source: the model input as it is
    batch['input'] = record['input']
  return batch


def train_iterator(source, data_config: ml_collections.ConfigDict, global_batch_size: int,
                   seed: int, process_index: int = 0, process_count: int = 1,
                   to_device: Callable[[dict], Any] | None = None):
  """An endless, reshuffled-every-epoch iterator of local batches with get_state/set_state.

  The shuffle is grain's index shuffle keyed by `seed`, so a restored iterator state continues
  with exactly the batches the interrupted run would have seen. With `to_device` (e.g.
  `lambda b: parallel.global_batch(b, mesh)`) it yields that function's results instead, made
  `data.device_prefetch` batches ahead by a background thread; the state is still that of the
  last batch handed out, not of the ones waiting in the buffer.
  """
  batch = local_batch_size(global_batch_size, process_count)
  if len(source) < global_batch_size:
    raise ValueError(f'the training split has {len(source)} images, fewer than the batch of '
                     f'{global_batch_size}; lower train.batch_size')
  examples = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  rows = _local_rows(examples, batch, process_index, process_count)
  dataset = rows.map(_strip_index).batch(batch, drop_remainder=True)
  iter_dataset = dataset.to_iter_dataset(_read_options(data_config))
  if data_config.num_workers > 0:
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=int(data_config.num_workers)))
  return iter(_put_on_device(iter_dataset, data_config, to_device))


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


# Far more rows than any run reads; grain datasets index lazily, so the length costs nothing.
_ENDLESS = 2**62


def _global_position(local_row: int, batch: int, process_index: int, process_count: int) -> int:
  """Position in the global example order of a process's `local_row`-th row."""
  step, row = divmod(int(local_row), batch)
  return step * batch * process_count + process_index * batch + row


def _local_rows(examples: grain.MapDataset, batch: int, process_index: int, process_count: int,
                length: int = _ENDLESS) -> grain.MapDataset:
  """This process's rows of every global batch, in order: a lazy view over `examples`."""
  if process_count == 1:
    return examples if length == _ENDLESS else examples[:length]
  return grain.MapDataset.range(length).map(
      lambda i: examples[_global_position(i, batch, process_index, process_count)])


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
  total = len(source)
  padded = num_eval_batches(total, global_batch_size, max_batches) * global_batch_size
  blank = _strip_index(source[0])
  blank = {**{name: np.zeros_like(value) for name, value in blank.items()},
           'label': np.int32(0), 'index': np.int32(-1)}

  def fetch(index: int) -> dict:
    index = int(index)
    if index < total:
      return {**_strip_index(source[index]), 'mask': np.float32(1)}
    return {**blank, 'mask': np.float32(0)}

  positions = _local_rows(grain.MapDataset.range(padded), batch, process_index, process_count,
                          length=padded // process_count)
  dataset = positions.map(fetch).batch(batch, drop_remainder=False)
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
