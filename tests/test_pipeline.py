"""The grain pipelines: seeded shuffling, resumable iterator state, complete eval passes."""

import functools

import jax
import numpy as np
import pytest
from conftest import tiny_config

from jvae import parallel
from jvae.data import pipeline, sources


def _digits(split='train'):
  config = tiny_config()
  return sources.open_source(config.data, split, seed=0), config.data


@pytest.mark.parametrize('prefetch_threads', [0, 2])
def test_a_restored_iterator_continues_with_the_same_batches(prefetch_threads):
  source, data_config = _digits()
  data_config.prefetch_threads = prefetch_threads
  iterator = pipeline.train_iterator(source, data_config, 16, seed=3)
  for _ in range(5):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)['image'] for _ in range(4)]
  fresh = pipeline.train_iterator(source, data_config, 16, seed=3)
  fresh.set_state(state)
  for batch in expected:
    np.testing.assert_array_equal(next(fresh)['image'], batch)


@pytest.mark.parametrize('prefetch_threads', [0, 2])
def test_device_prefetch_yields_the_same_global_batches_and_a_resumable_state(prefetch_threads):
  source, data_config = _digits()
  data_config.prefetch_threads = prefetch_threads
  mesh = parallel.make_mesh()
  to_device = functools.partial(parallel.global_batch, mesh=mesh)
  plain = pipeline.train_iterator(source, data_config, 16, seed=3)
  expected = [next(plain)['image'] for _ in range(9)]
  data_config.device_prefetch = 3
  prefetching = pipeline.train_iterator(source, data_config, 16, seed=3, to_device=to_device)
  for batch in expected[:5]:
    image = next(prefetching)['image']
    assert isinstance(image, jax.Array) and image.sharding == parallel.data_sharded(mesh)
    np.testing.assert_array_equal(np.asarray(image), batch)
  # By now the thread has made batches 6-8 as well; the state is still that of batch 5.
  state = prefetching.get_state()
  prefetching.close()
  fresh = pipeline.train_iterator(source, data_config, 16, seed=3, to_device=to_device)
  fresh.set_state(state)
  for batch in expected[5:]:
    np.testing.assert_array_equal(np.asarray(next(fresh)['image']), batch)
  fresh.close()


def test_each_epoch_is_a_new_permutation_of_the_whole_split():
  source, data_config = _digits()
  n = len(source) - len(source) % 16
  iterator = pipeline.train_iterator(source, data_config, 16, seed=0)
  epoch_batches = -(-len(source) // 16) * 2
  images = np.concatenate([next(iterator)['image'] for _ in range(epoch_batches)])
  first = images[:len(source)].reshape(len(source), -1)
  second = images[len(source):2 * len(source)].reshape(len(source), -1) if \
      len(images) >= 2 * len(source) else None
  all_images = np.stack([source[i]['image'] for i in range(len(source))]).reshape(len(source), -1)
  # Every training image appears in the first epoch exactly as often as in the split.
  np.testing.assert_array_equal(np.sort(first.view('S64').ravel()),
                                np.sort(all_images.view('S64').ravel()))
  if second is not None:
    assert not np.array_equal(first[:n], second[:n])
  other_seed = pipeline.train_iterator(source, data_config, 16, seed=1)
  assert not np.array_equal(next(other_seed)['image'], images[:16])


def test_eval_visits_every_example_once_with_a_padded_last_batch():
  source, data_config = _digits('test')
  batches = list(pipeline.eval_batches(source, data_config, 64))
  assert all(b['image'].shape[0] == 64 for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == len(source) and len(batches) == -(-len(source) // 64)
  images = np.concatenate([b['image'] for b in batches])[mask == 1]
  np.testing.assert_array_equal(images, np.stack([source[i]['image']
                                                  for i in range(len(source))]))


def test_process_shards_together_form_each_global_batch():
  source, data_config = _digits('test')
  per_process = [list(pipeline.eval_batches(source, data_config, 64, process_index=p,
                                            process_count=2)) for p in range(2)]
  assert len(per_process[0]) == len(per_process[1])
  seen = []
  for local0, local1 in zip(*per_process):
    assert local0['image'].shape[0] == 32
    for local in (local0, local1):
      seen.extend(local['image'][local['mask'] == 1].reshape(-1, 64).tolist())
  assert len(seen) == len(source)
  train = [pipeline.train_iterator(source, data_config, 32, seed=0, process_index=p,
                                   process_count=2) for p in range(2)]
  a, b = next(train[0]), next(train[1])
  assert a['image'].shape[0] == 16 and not np.array_equal(a['image'], b['image'])


def test_process_local_train_batches_assemble_into_the_single_process_batches():
  source, data_config = _digits()
  single = pipeline.train_iterator(source, data_config, 32, seed=5)
  local = [pipeline.train_iterator(source, data_config, 32, seed=5, process_index=p,
                                   process_count=4) for p in range(4)]
  for _ in range(50):  # Past the end of the first epoch (1438 images / 32 per batch).
    expected = next(single)
    parts = [next(it) for it in local]
    for name in ('image', 'label', 'index'):
      np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), expected[name])


def _stacked_records(source, indices):
  records = [source[int(i)] for i in indices]
  return {name: np.stack([r[name] for r in records]) for name in records[0]}


def test_read_batch_equals_the_records_it_stacks(tmp_path):
  from PIL import Image
  digits, data_config = _digits()
  without_threes = sources.select_labels(digits, exclude=(3,))
  rng = np.random.default_rng(0)
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f'{i}.png')
  data_config.source = f'folder:{tmp_path}'
  data_config.holdout_fraction = 0.0
  folder = sources.open_source(data_config, 'train', seed=0)
  cases = ((digits, [5, 0, 5, 1200]), (without_threes, [7, 2, len(without_threes) - 1]),
           (folder, [4, 1, 1]))
  for source, indices in cases:
    batch = source.read_batch(np.asarray(indices))
    expected = _stacked_records(source, indices)
    assert batch.keys() == expected.keys()
    for name, values in expected.items():
      np.testing.assert_array_equal(batch[name], values)
    assert batch['image'].dtype == np.uint8
    assert batch['label'].dtype == batch['index'].dtype == np.int32
  # The gather copies: writing into a batch cannot change the cached split.
  digits.read_batch(np.asarray([0]))['image'][:] = 0
  assert digits[0]['image'].any()


def test_worker_processes_yield_the_same_batches_and_a_resumable_state():
  source, data_config = _digits()
  in_process = pipeline.train_iterator(source, data_config, 16, seed=2)
  expected = [next(in_process) for _ in range(6)]
  data_config.num_workers = 2
  workers = pipeline.train_iterator(source, data_config, 16, seed=2)
  for batch in expected[:3]:
    got = next(workers)
    for name in ('image', 'label', 'index'):
      np.testing.assert_array_equal(got[name], batch[name])
  state = workers.get_state()
  resumed = pipeline.train_iterator(source, data_config, 16, seed=2)
  pipeline.restore_state(resumed, state, data_config)
  for batch in expected[3:]:
    np.testing.assert_array_equal(next(resumed)['image'], batch['image'])
  data_config.num_workers = 0
  with pytest.raises(ValueError, match=r'data.num_workers the run was saved with \(now 0\)'):
    pipeline.restore_state(pipeline.train_iterator(source, data_config, 16, seed=2), state,
                           data_config)
