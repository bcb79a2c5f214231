"""Tests for jvae/data/sources.py and jvae/data/speckle.py."""

from __future__ import annotations

import logging
import pickle
import time
import types
from pathlib import Path

import grain
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jvae import config
from jvae.data import sources, speckle
from jvae.data.sources import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


def data_config(**changes) -> ml_collections.ConfigDict:
  cfg = config.base_config().data
  for key, value in changes.items():
    cfg[key] = value
  return cfg


def shared_file(name: str) -> Path:
  # The shared data ships with the project; a missing copy is a broken checkout, not a skip.
  path = SHARED_DATA / name
  assert path.is_file(), f'shared dataset {path} is missing'
  return path


def write_image(path: Path, size_wh=(8, 6), mode='RGB', seed=0, fmt=None) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  shape = (size_wh[1], size_wh[0]) + ((3,) if mode == 'RGB' else ())
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, fmt)
  return path


def check_record(record, shape, label=None):
  assert set(record) == {'image', 'label', 'index'}
  assert record['image'].dtype == np.uint8 and record['image'].shape == shape
  assert isinstance(record['label'], np.int32)
  assert isinstance(record['index'], np.int64)
  if label is not None:
    assert record['label'] == label


# ------------------------------------------------------------------------------------------ npz


def write_npz(path: Path, **arrays) -> str:
  np.savez(path, **arrays)
  return f'npz:{path}'


def test_npz_tiny_labeled_and_converted(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
  x_test = rng.integers(0, 256, (3, 6, 7, 3), dtype=np.uint8)
  source = write_npz(tmp_path / 'd.npz', x_train=x_train, y_train=np.array([0, 1, 2, 1, 0]),
                     x_test=x_test, y_test=np.array([3, 0, 1], np.uint8),
                     class_names=np.array(['a', 'b', 'c', 'd', 'e']))

  train = sources.open_source(data_config(source=source), 'train', 0)
  assert len(train) == 5
  # num_classes covers the class names (5) even though labels only reach 3.
  assert train.info == sources.SourceInfo((6, 7, 1), 5, ('a', 'b', 'c', 'd', 'e'), ())
  for i in range(5):
    check_record(train[i], (6, 7, 1), label=[0, 1, 2, 1, 0][i])
    np.testing.assert_array_equal(train[i]['image'][..., 0], x_train[i])
    assert train[i]['index'] == i
  assert train[-1]['index'] == 4
  with pytest.raises(IndexError):
    train[5]

  gray = sources.open_source(data_config(source=source, channels=1), 'test', 0)
  check_record(gray[2], (6, 7, 1), label=1)
  expected = np.asarray(Image.fromarray(x_test[2]).convert('L'))
  np.testing.assert_array_equal(gray[2]['image'][..., 0], expected)

  resized = sources.open_source(data_config(source=source, image_size=16, channels=3), 'train', 0)
  check_record(resized[1], (16, 16, 3), label=1)
  expected = np.asarray(Image.fromarray(x_train[1]).resize((16, 16), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(resized[1]['image'], np.repeat(expected[..., None], 3, -1))


def test_npz_unlabeled_and_val_alias(tmp_path):
  x = np.zeros((4, 5, 5, 1), np.uint8)
  source = write_npz(tmp_path / 'd.npz', x_train=x, x_validation=x[:2])
  val = sources.open_source(data_config(source=source), 'val', 0)
  assert len(val) == 2
  assert val.info.num_classes == 0 and val.info.class_names == ()
  check_record(val[0], (5, 5, 1), label=-1)


def test_npz_errors(tmp_path):
  x = np.zeros((4, 5, 5), np.uint8)
  source = write_npz(tmp_path / 'keys.npz', x_train=x, y_train=np.zeros(4, int), images=x)
  with pytest.raises(DataError, match='no key x_test') as e:
    sources.open_source(data_config(source=source), 'test', 0)
  assert 'x_train, y_train, images' in str(e.value)
  assert 'splits they imply: train' in str(e.value)

  source = write_npz(tmp_path / 'float.npz', x_train=x.astype(np.float32))
  with pytest.raises(DataError, match='x_train has dtype float32; images must be uint8'):
    sources.open_source(data_config(source=source), 'train', 0)

  source = write_npz(tmp_path / 'rank.npz', x_train=np.zeros((4, 5), np.uint8))
  with pytest.raises(DataError, match=r'shape \(4, 5\).*\[N, H, W\]'):
    sources.open_source(data_config(source=source), 'train', 0)

  source = write_npz(tmp_path / 'chan.npz', x_train=np.zeros((4, 5, 5, 2), np.uint8))
  with pytest.raises(DataError, match='C in 1, 3'):
    sources.open_source(data_config(source=source), 'train', 0)

  source = write_npz(tmp_path / 'len.npz', x_train=x, y_train=np.zeros(3, int))
  with pytest.raises(DataError, match='3 labels but x_train has 4 images'):
    sources.open_source(data_config(source=source), 'train', 0)

  source = write_npz(tmp_path / 'ylab.npz', x_train=x, y_train=np.zeros(4, np.float32))
  with pytest.raises(DataError, match='labels must be integers'):
    sources.open_source(data_config(source=source), 'train', 0)

  with pytest.raises(DataError, match='file not found'):
    sources.open_source(data_config(source=f'npz:{tmp_path / "nope.npz"}'), 'train', 0)

  np.save(tmp_path / 'single.npy', x)
  with pytest.raises(DataError, match='single array'):
    sources.open_source(data_config(source=f'npz:{tmp_path / "single.npy"}'), 'train', 0)


def test_real_mnist_test_split_native():
  start = time.perf_counter()
  source = sources.open_source(
      data_config(source=f'npz:{shared_file("mnist.npz")}', image_size=0), 'test', 0)
  elapsed = time.perf_counter() - start
  assert elapsed < 5.0, f'opening MNIST test took {elapsed:.1f}s'
  assert len(source) == 10000
  assert source.info.image_shape == (28, 28, 1) and source.info.num_classes == 10
  check_record(source[0], (28, 28, 1), label=7)  # the canonical first MNIST test label


def test_real_cifar_resized_to_64_rgb():
  path = shared_file('cifar10_32_subset.npz')
  start = time.perf_counter()
  source = sources.open_source(
      data_config(source=f'npz:{path}', image_size=64, channels=3), 'test', 0)
  elapsed = time.perf_counter() - start
  assert elapsed < 5.0, f'opening and resizing the CIFAR subset took {elapsed:.1f}s'
  assert len(source) == 2000
  assert source.info.image_shape == (64, 64, 3)
  assert source.info.class_names[:2] == ('airplane', 'automobile')
  # The whole-array resize must match Pillow resizing one image at a time.
  with np.load(path) as archive:
    original, label = archive['x_test'][1234], archive['y_test'][1234]
  expected = np.asarray(Image.fromarray(original).resize((64, 64), Image.Resampling.BICUBIC))
  record = source[1234]
  check_record(record, (64, 64, 3), label=label)
  np.testing.assert_array_equal(record['image'], expected)


# --------------------------------------------------------------------------------------- folder


def test_folder_with_split_and_class_folders(tmp_path):
  write_image(tmp_path / 'train' / 'cat' / 'a.png')
  write_image(tmp_path / 'train' / 'cat' / 'nested' / 'b.JPG')
  write_image(tmp_path / 'train' / 'dog' / 'c.bmp')
  (tmp_path / 'train' / 'notes.txt').write_text('not an image extension: ignored')
  write_image(tmp_path / 'test' / 'dog' / 'd.png')
  write_image(tmp_path / 'test' / 'loose.png')
  # 'emu' exists only in test; its id must be the same whichever split is opened.
  write_image(tmp_path / 'test' / 'emu' / 'e.webp')

  train = sources.open_source(data_config(source=f'folder:{tmp_path}'), 'train', 0)
  assert train.info == sources.SourceInfo((6, 8, 3), 3, ('cat', 'dog', 'emu'), ())
  assert [Path(p).name for p in train.paths] == ['a.png', 'b.JPG', 'c.bmp']
  assert [int(train[i]['label']) for i in range(3)] == [0, 0, 1]
  check_record(train[0], (6, 8, 3))
  np.testing.assert_array_equal(train[0]['image'],
                                np.asarray(Image.open(tmp_path / 'train' / 'cat' / 'a.png')))

  test = sources.open_source(data_config(source=f'folder:{tmp_path}', image_size=4, channels=1),
                             'test', 0)
  assert [int(test[i]['label']) for i in range(3)] == [1, 2, -1]
  check_record(test[2], (4, 4, 1))

  with pytest.raises(DataError, match="no split folder for split 'val'.*train"):
    sources.open_source(data_config(source=f'folder:{tmp_path}'), 'val', 0)


def test_flat_folder_holdout_is_disjoint_and_deterministic(tmp_path):
  for i in range(20):
    write_image(tmp_path / ('odd' if i % 2 else 'even') / f'{i:02d}.png', seed=i)
  cfg = data_config(source=f'folder:{tmp_path}', holdout_fraction=0.25)
  train = sources.open_source(cfg, 'train', 3)
  test = sources.open_source(cfg, 'test', 3)
  assert (len(train), len(test)) == (15, 5)
  assert not set(train.paths) & set(test.paths)
  assert len(set(train.paths) | set(test.paths)) == 20
  assert sources.open_source(cfg, 'test', 3).paths == test.paths
  assert sources.open_source(cfg, 'val', 3).paths == test.paths
  assert sources.open_source(cfg, 'test', 4).paths != test.paths
  assert train.info.class_names == ('even', 'odd')
  for i in range(len(test)):
    assert test[i]['label'] == int(Path(test.paths[i]).stem) % 2
  with pytest.raises(DataError, match="no split 'extra'"):
    sources.open_source(cfg, 'extra', 3)


def truncate(path: Path) -> Path:
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


def test_truncated_images_skipped_or_raised(tmp_path, caplog):
  for i in range(3):
    write_image(tmp_path / f'good{i}.png', size_wh=(32, 32), seed=i)
  bad_png = truncate(write_image(tmp_path / 'bad.png', size_wh=(32, 32)))
  bad_jpg = truncate(write_image(tmp_path / 'bad.jpg', size_wh=(32, 32)))
  cfg = data_config(source=f'folder:{tmp_path}', holdout_fraction=0.0)

  with caplog.at_level(logging.WARNING):
    source = sources.open_source(cfg, 'train', 0)
  assert len(source) == 3
  assert sorted(source.info.bad_files) == sorted([str(bad_jpg), str(bad_png)])
  assert 'skipping 2 unreadable' in caplog.text
  for i in range(3):
    check_record(source[i], (32, 32, 3), label=-1)

  cfg.on_bad_image = 'error'
  with pytest.raises(DataError, match=r"cannot read image .*bad\.(jpg|png).*on_bad_image='skip'"):
    sources.open_source(cfg, 'train', 0)


def test_mixed_sizes_and_modes(tmp_path):
  sizes = tmp_path / 'sizes'
  write_image(sizes / 'a.png', size_wh=(8, 8))
  write_image(sizes / 'b.png', size_wh=(10, 8))
  cfg = data_config(source=f'folder:{sizes}', holdout_fraction=0.0)
  with pytest.raises(DataError, match=r'a\.png is 8x8 but .*b\.png is 10x8.*data\.image_size'):
    sources.open_source(cfg, 'train', 0)
  cfg.image_size = 12
  source = sources.open_source(cfg, 'train', 0)
  assert [source[i]['image'].shape for i in range(2)] == [(12, 12, 3)] * 2

  modes = tmp_path / 'modes'
  write_image(modes / 'a.png', mode='L')
  write_image(modes / 'b.png', mode='RGB')
  cfg = data_config(source=f'folder:{modes}', holdout_fraction=0.0)
  with pytest.raises(DataError, match=r'mode L but .*b\.png is mode RGB.*data\.channels'):
    sources.open_source(cfg, 'train', 0)
  cfg.channels = 3
  source = sources.open_source(cfg, 'train', 0)
  gray = source[0]['image']
  assert gray.shape == (6, 8, 3) and (gray[..., 0] == gray[..., 2]).all()


def test_folder_missing_and_empty(tmp_path):
  with pytest.raises(DataError, match='folder not found'):
    sources.open_source(data_config(source=f'folder:{tmp_path / "nope"}'), 'train', 0)
  (tmp_path / 'empty' / 'cls').mkdir(parents=True)
  (tmp_path / 'empty' / 'readme.txt').write_text('no images')
  with pytest.raises(DataError, match=r'holds no images .*bmp, gif, jpeg, jpg, png, webp'):
    sources.open_source(data_config(source=f'folder:{tmp_path / "empty"}'), 'train', 0)
  (tmp_path / 'split' / 'train').mkdir(parents=True)
  with pytest.raises(DataError, match=r"split folder .*train' holds no images"):
    sources.open_source(data_config(source=f'folder:{tmp_path / "split"}'), 'train', 0)


# ----------------------------------------------------------------------------------------- tfds


def test_tfds_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=5):
    source = sources.open_source(data_config(source='tfds:mnist'), 'train', 0)
    resized = sources.open_source(
        data_config(source='tfds:mnist', image_size=16, channels=3), 'train', 0)
  assert len(source) == 5
  assert source.info.image_shape == (28, 28, 1) and source.info.num_classes == 10
  record = source[4]
  check_record(record, (28, 28, 1))
  assert 0 <= record['label'] < 10
  check_record(resized[0], (16, 16, 3))


def test_tfds_failure_is_a_data_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  # An empty data dir: the dataset is not prepared, and nothing may be downloaded.
  cfg = data_config(source='tfds:mnist', tfds_data_dir=str(tmp_path))
  with pytest.raises(DataError, match="TFDS dataset 'mnist'.*could not be loaded") as e:
    sources.open_source(cfg, 'train', 0)
  assert 'npz:' in str(e.value) and 'folder:' in str(e.value)
  cfg.source = 'tfds:no_such_dataset_xyz'
  with pytest.raises(DataError, match='no_such_dataset_xyz.*could not be loaded'):
    sources.open_source(cfg, 'train', 0)


# ------------------------------------------------------------------------------------- builtins


def test_speckle_contrast_is_that_of_fully_developed_speckle():
  contrasts = []
  for i in range(4):
    intensity = speckle.speckle_image(np.random.default_rng(i), 64, 0.25)
    assert intensity.shape == (64, 64) and (intensity >= 0).all()
    np.testing.assert_allclose(intensity.mean(), 1.0)
    contrasts.append(intensity.std() / intensity.mean())
  assert 0.85 <= np.mean(contrasts) <= 1.15


def test_speckle_source_is_deterministic():
  cfg = data_config(source='builtin:speckle', speckle_num_train=7, speckle_num_eval=3)
  train = sources.open_source(cfg, 'train', 1)
  assert len(train) == 7 and len(sources.open_source(cfg, 'test', 1)) == 3
  assert train.info == sources.SourceInfo((64, 64, 1), 0, (), ())
  record = train[2]
  check_record(record, (64, 64, 1), label=-1)
  np.testing.assert_array_equal(record['image'], train[2]['image'])
  np.testing.assert_array_equal(record['image'],
                                sources.open_source(cfg, 'train', 1)[2]['image'])
  assert record['image'].std() > 20  # a pattern, not a flat image
  # Another index, another split, another seed: each gives an independent pattern.
  for other in (train[3], sources.open_source(cfg, 'test', 1)[2],
                sources.open_source(cfg, 'train', 2)[2]):
    assert not np.array_equal(record['image'], other['image'])

  cfg.image_size, cfg.channels = 32, 3
  rgb = sources.open_source(cfg, 'val', 1)[0]['image']
  assert rgb.shape == (32, 32, 3) and (rgb[..., 0] == rgb[..., 1]).all()


def test_digits_split_is_disjoint_and_complete():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  cfg = data_config(source='builtin:digits')
  train = sources.open_source(cfg, 'train', 0)
  test = sources.open_source(cfg, 'test', 0)
  assert (len(train), len(test)) == (1438, 359)
  assert not set(train.source_indices) & set(test.source_indices)
  assert sorted([*train.source_indices, *test.source_indices]) == list(range(1797))
  np.testing.assert_array_equal(sources.open_source(cfg, 'val', 0).source_indices,
                                test.source_indices)
  assert train.info == sources.SourceInfo((8, 8, 1), 10, tuple('0123456789'), ())
  record = test[10]
  original = test.source_indices[10]
  check_record(record, (8, 8, 1), label=digits.target[original])
  np.testing.assert_array_equal(record['image'][..., 0],
                                np.round(digits.images[original] * 255 / 16).astype(np.uint8))


# ---------------------------------------------------------------------------------- common API


def test_unknown_sources_list_the_allowed_ones():
  with pytest.raises(DataError, match='tfds:<name>, npz:<path>, folder:<path>, builtin:digits'):
    sources.open_source(data_config(source='csv:/x'), 'train', 0)
  with pytest.raises(DataError, match="unknown built-in 'faces'.*builtin:speckle"):
    sources.open_source(data_config(source='builtin:faces'), 'train', 0)
  with pytest.raises(DataError, match="'data.channels' is 2"):
    sources.open_source(data_config(channels=2), 'train', 0)


def test_sources_are_picklable_grain_data_sources(tmp_path):
  write_image(tmp_path / 'a.png')
  write_image(tmp_path / 'b.png', seed=1)
  opened = [
      sources.open_source(data_config(source='builtin:digits', image_size=12), 'test', 0),
      sources.open_source(data_config(source=f'folder:{tmp_path}'), 'train', 0),
      sources.open_source(data_config(source='builtin:speckle'), 'test', 0),
  ]
  for source in opened:
    assert isinstance(source, grain.sources.RandomAccessDataSource)
    assert 'object at 0x' not in repr(source)
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[0]['image'], source[0]['image'])
    assert copy.info == source.info


def test_tfds_split_names_are_checked_against_the_builder(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  features = {'image': types.SimpleNamespace(shape=(None, None, 3)),
              'label': types.SimpleNamespace(names=['a', 'b'], num_classes=2)}
  builder = types.SimpleNamespace(info=types.SimpleNamespace(
      splits={'train': None, 'validation': None}, features=features))
  opened = []
  records = [{'image': np.full((5, 7, 3), 9, np.uint8), 'label': np.int64(1)}]

  def data_source(name, split, data_dir, download):
    opened.append((name, split, data_dir, download))
    return records

  monkeypatch.setattr(tfds, 'builder', lambda name, data_dir: builder)
  monkeypatch.setattr(tfds, 'data_source', data_source)
  cfg = data_config(source='tfds:fake', image_size=4, tfds_data_dir='/data/tfds')
  source = sources.open_source(cfg, 'val', 0)
  assert opened == [('fake', 'validation', '/data/tfds', False)]
  assert source.info == sources.SourceInfo((4, 4, 3), 2, ('a', 'b'), ())
  check_record(source[0], (4, 4, 3), label=1)
  with pytest.raises(DataError, match="no split 'test'; its splits: train, validation"):
    sources.open_source(cfg, 'test', 0)
  cfg.image_size = 0
  with pytest.raises(DataError, match='varying size.*data.image_size'):
    sources.open_source(cfg, 'train', 0)
