"""Random-access image sources: TFDS, .npz arrays, image folders, paired folders, built-in sets.

Every source follows grain's `RandomAccessDataSource` protocol (`__len__`, `__getitem__`, a stable
`__repr__`, picklable) and yields records

  {'image': uint8 [H, W, C] in [0, 255],
   'label': int32 scalar, class id in [0, num_classes) or -1 when unlabeled,
   'index': int64 scalar, the record's position in this source (0 .. len - 1)}

and paired sources (`pairs:<distorted_dir>,<clear_dir>`) add 'input': uint8 [H, W, C], the
distorted image whose clear version is 'image'.

with images already resized to `data.image_size` (square; 0 keeps the native size) and converted to
`data.channels` (1 grayscale, 3 RGB; 0 keeps the native count). In-memory sources (npz, digits)
resize the whole split once when opened; folders and TFDS decode and resize per record; speckle is
generated per record from (seed, split, index).

Problems with the data (missing files or keys, wrong dtypes, unreadable images, inconsistent sizes)
raise `DataError` with a message naming the source, the file or key, and what is allowed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from jvae.data import speckle

SOURCE_KINDS = ('tfds', 'npz', 'folder', 'pairs', 'builtin')
BUILTIN_SOURCES = ('digits', 'speckle')
IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.webp')
# Subfolder names that mark a folder as already split.
SPLIT_DIRS = ('train', 'val', 'validation', 'test')
# Split names served by the held-out part of sources that have no split of their own.
HOLDOUT_SPLITS = ('test', 'val', 'validation')
DEFAULT_SPECKLE_SIZE = 64

# Pillow modes whose pixels carry one intensity (alpha, if any, is dropped on conversion).
_GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'})
# Images per Pillow call when resizing whole arrays; bounds the temporary tiled image's memory.
_RESIZE_CHUNK = 2048


class DataError(ValueError):
  """The data cannot be read as configured. The message names the source, file or field."""


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """What every record of a source looks like.

  Attributes:
    image_shape: (H, W, C) of every record's image, after resizing and channel conversion.
    num_classes: labels are in [0, num_classes); 0 when the source is unlabeled.
    class_names: a name per class id when the source has them, else ().
    bad_files: files skipped as unreadable (folder sources with data.on_bad_image='skip').
  """
  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...] = ()
  bad_files: tuple[str, ...] = ()


class ImageSource:
  """Base of all sources: a grain `RandomAccessDataSource` of image records.

  Attributes:
    info: the `SourceInfo` shared by all records.
    name: a description of the source and split, used in messages and `repr`.
  """

  info: SourceInfo
  name: str

  def __len__(self) -> int:
    raise NotImplementedError

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    """The uint8 [H, W, C] image and the int label (-1 if none) of record `index` (in range)."""
    raise NotImplementedError

  def labels(self) -> np.ndarray:
    """int32 [len]: every record's label (-1 if none). Reads every record unless overridden."""
    return np.asarray([self._load(i)[1] for i in range(len(self))], dtype=np.int32)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """Record `index` (an int in [-len, len)): {'image', 'label', 'index'} as in the module doc."""
    n = len(self)
    try:
      i = int(index)
    except TypeError:
      raise TypeError(f'{self.name}: record index must be an integer, got {index!r}') from None
    if i < 0:
      i += n
    if not 0 <= i < n:
      raise IndexError(f'{self.name}: record index {index} out of range for {n} records')
    image, label = self._load(i)
    return {'image': image, 'label': np.int32(label), 'index': np.int64(i)}

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Records `indices` (ints in [0, len)) stacked: {'image' [b, H, W, C] uint8, 'label' [b]
    int32, 'index' [b] int32, and 'input' from paired sources}, the pipelines' batch layout.

    Reads record by record; in-memory sources override it with one gather.
    """
    records = [self[int(i)] for i in indices]
    batch = {name: np.stack([r[name] for r in records]) for name in records[0]}
    batch['label'] = batch['label'].astype(np.int32)
    batch['index'] = batch['index'].astype(np.int32)
    return batch

  def __repr__(self) -> str:
    # grain keys checkpoints on the repr, so it holds no memory addresses.
    return f'{type(self).__name__}({self.name}, n={len(self)}, image_shape={self.info.image_shape})'


class ArraySource(ImageSource):
  """Images held in memory, already resized and converted.

  Attributes:
    source_indices: int64 [len], for each record its position in the full collection the split was
      taken from (the npz array, or the 1797 digits); lets callers check splits are disjoint.
  """

  def __init__(self, name: str, images: np.ndarray, labels: np.ndarray | None, info: SourceInfo,
               source_indices: np.ndarray | None = None):
    """Args: images uint8 [N, H, W, C]; labels int [N] or None (unlabeled); source_indices [N]."""
    self.name = name
    self.info = info
    self._images = images
    self._labels = None if labels is None else labels.astype(np.int32)
    self.source_indices = (np.arange(len(images), dtype=np.int64) if source_indices is None
                           else np.asarray(source_indices, dtype=np.int64))

  def __len__(self) -> int:
    return len(self._images)

  def labels(self) -> np.ndarray:
    if self._labels is None:
      return np.full(len(self), -1, np.int32)
    return self._labels.copy()

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    # A copy, so that a consumer writing into its record cannot change the cached split.
    label = -1 if self._labels is None else int(self._labels[index])
    return self._images[index].copy(), label

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    # Fancy indexing copies, so the cached split stays safe from consumers here too.
    labels = (np.full(len(indices), -1, np.int32) if self._labels is None
              else self._labels[indices])
    return {'image': self._images[indices], 'label': labels, 'index': indices.astype(np.int32)}


class FolderSource(ImageSource):
  """Image files decoded, converted and resized on every read.

  Attributes:
    paths: the image files of this split, one per record, as strings.
  """

  def __init__(self, name: str, paths: Sequence[str], labels: Sequence[int], info: SourceInfo):
    self.name = name
    self.info = info
    self.paths = tuple(paths)
    self._labels = np.asarray(labels, dtype=np.int32)

  def __len__(self) -> int:
    return len(self.paths)

  def labels(self) -> np.ndarray:
    return self._labels.copy()

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    height, width, channels = self.info.image_shape
    path = self.paths[index]
    try:
      with Image.open(path) as im:
        if im.format == 'JPEG' and im.size != (width, height):
          # libjpeg can decode at 1/2, 1/4 or 1/8 scale (never below the requested size), which
          # makes large photos several times cheaper to shrink; the resize below finishes the job.
          im.draft('L' if channels == 1 else 'RGB', (width, height))
        image = _pil_to_array(im, (width, height), channels)
    except Exception as e:  # the file was readable when the source was opened
      raise DataError(f'{self.name}: cannot read image {path}: {type(e).__name__}: {e}') from e
    return image, int(self._labels[index])


class PairSource(ImageSource):
  """Distorted/clear pairs from two folders: the clear image is 'image', the distorted 'input'.

  Attributes:
    clear: the clear images (targets), one per record.
    distorted: the distorted images (model inputs), aligned with `clear`.
  """

  def __init__(self, name: str, clear: FolderSource, distorted: FolderSource):
    self.name = name
    self.info = clear.info
    self.clear = clear
    self.distorted = distorted

  def __len__(self) -> int:
    return len(self.clear)

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    return self.clear[index]['image'], -1

  def labels(self) -> np.ndarray:
    return np.full(len(self), -1, np.int32)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """Record `index`: {'image', 'input', 'label' (-1), 'index'} as in the module doc."""
    record = super().__getitem__(index)
    record['input'] = self.distorted[int(record['index'])]['image']
    return record


class LabelSubset(ImageSource):
  """The records of `source` whose label passes a filter, in their original order.

  Used for one-class setups (train on every digit but one, score that digit as the anomaly).
  Record i of the subset is record `positions[i]` of `source`; its 'index' is i.
  """

  def __init__(self, source: ImageSource, positions: np.ndarray, description: str):
    self.name = f'{source.name} {description}'
    self.info = source.info
    self.source = source
    self.positions = np.asarray(positions, dtype=np.int64)

  def __len__(self) -> int:
    return len(self.positions)

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    record = self.source[int(self.positions[index])]
    return record['image'], int(record['label'])

  def labels(self) -> np.ndarray:
    return self.source.labels()[self.positions]

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    batch = self.source.read_batch(self.positions[np.asarray(indices, dtype=np.int64)])
    batch['index'] = np.asarray(indices, dtype=np.int32)
    return batch


def select_labels(source: ImageSource, exclude: Sequence[int] = (),
                  include: Sequence[int] = ()) -> ImageSource:
  """The records of `source` with a label in `include` (if given) and not in `exclude`.

  Raises DataError for an unlabeled source, labels outside [0, num_classes) or an empty result.
  """
  exclude, include = tuple(int(k) for k in exclude), tuple(int(k) for k in include)
  if not exclude and not include:
    return source
  num_classes = source.info.num_classes
  if num_classes == 0:
    raise DataError(f'{source.name}: cannot select records by label (data.exclude_labels or '
                    'anomaly labels): the source has no labels')
  bad = [k for k in exclude + include if not 0 <= k < num_classes]
  if bad:
    raise DataError(f'{source.name}: labels {bad} are not classes of this source; allowed: '
                    f'0..{num_classes - 1}')
  labels = source.labels()
  keep = ~np.isin(labels, exclude)
  if include:
    keep &= np.isin(labels, include)
  description = ' '.join(part for part in (f'include={list(include)}' if include else '',
                                           f'exclude={list(exclude)}' if exclude else '') if part)
  if not keep.any():
    raise DataError(f'{source.name}: no records left after selecting labels ({description})')
  return LabelSubset(source, np.flatnonzero(keep), description)


class TfdsSource(ImageSource):
  """A TFDS random-access data source, converted and resized on every read."""

  def __init__(self, name: str, data_source: Any, info: SourceInfo, image_size: int,
               channels: int, has_label: bool):
    self.name = name
    self.info = info
    self._data_source = data_source
    self._image_size = image_size
    self._channels = channels
    self._has_label = has_label

  def __len__(self) -> int:
    return len(self._data_source)

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    example = self._data_source[index]
    image = np.asarray(example['image'])
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8:
      raise DataError(f'{self.name}: record {index} image has dtype {image.dtype}; only uint8 '
                      'images are supported')
    image = _prepare_images(image[None], self._image_size, self._channels)[0]
    label = int(example['label']) if self._has_label else -1
    return image, label


class SpeckleSource(ImageSource):
  """Speckle patterns generated on each read from (seed, split, index); see `speckle.py`."""

  def __init__(self, seed: int, split: str, length: int, size: int, channels: int,
               pupil_fraction: float):
    self.name = f'builtin:speckle split={split!r} seed={seed}'
    self.info = SourceInfo(image_shape=(size, size, channels), num_classes=0)
    self._seed = seed
    self._split = split
    self._length = length
    self._size = size
    self._channels = channels
    self._pupil_fraction = pupil_fraction

  def __len__(self) -> int:
    return self._length

  def labels(self) -> np.ndarray:
    return np.full(len(self), -1, np.int32)

  def _load(self, index: int) -> tuple[np.ndarray, int]:
    image = speckle.speckle_record_image(self._seed, self._split, index, self._size,
                                         self._pupil_fraction)
    return np.repeat(image[..., None], self._channels, axis=-1), -1


def open_source(data_config: ml_collections.ConfigDict, split: str, seed: int) -> ImageSource:
  """Opens one split of the source `data_config.source` names.

  Args:
    data_config: the `data` section of a config built on `jvae.config.base_config()`.
    split: 'train', 'test', 'val' / 'validation' (TFDS, npz and split folders may have others).
    seed: >= 0; fixes the held-out part of flat folders, flat pairs and digits, and the speckle
      patterns.

  Returns:
    An `ImageSource`; `source.info` describes its records.

  Raises:
    DataError: the source, split or data is unusable; the message says why and what is allowed.
  """
  source = _field(data_config, 'source')
  if not isinstance(source, str):
    raise DataError(f"config field 'data.source' is {source!r}; expected a string")
  options = _Options.from_config(data_config)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f'seed is {seed!r}; sources need an int >= 0')
  if not isinstance(split, str) or not split:
    raise DataError(f'split is {split!r}; expected a split name such as \'train\' or \'test\'')
  seed = int(seed)
  exclude = _field(data_config, 'exclude_labels')
  if (not isinstance(exclude, (tuple, list))
      or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in exclude)):
    raise DataError(f"config field 'data.exclude_labels' is {exclude!r}; allowed: a tuple of "
                    'class ids, e.g. (3,)')
  return select_labels(_open_split(source, split, seed, options), exclude=exclude)


def _open_split(source: str, split: str, seed: int, options: _Options) -> ImageSource:
  kind, _, rest = source.partition(':')
  if kind not in SOURCE_KINDS or not rest:
    raise DataError(f"config field 'data.source' is {source!r}; allowed: tfds:<name>, npz:<path>, "
                    f'folder:<path>, {", ".join("builtin:" + b for b in BUILTIN_SOURCES)}, '
                    'pairs:<distorted_dir>,<clear_dir>')
  if kind == 'tfds':
    return _open_tfds(rest, split, options)
  if kind == 'npz':
    return _open_npz(rest, split, options)
  if kind == 'folder':
    return _open_folder(rest, split, seed, options)
  if kind == 'pairs':
    return _open_pairs(rest, split, seed, options)
  if rest == 'digits':
    return _open_digits(split, seed, options)
  if rest == 'speckle':
    return _open_speckle(split, seed, options)
  raise DataError(f"config field 'data.source' names unknown built-in {rest!r}; allowed: "
                  f'{", ".join("builtin:" + b for b in BUILTIN_SOURCES)}')


# --------------------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class _Options:
  """The `data` fields the sources read, checked, so that sources are safe without validation."""
  image_size: int
  channels: int
  holdout_fraction: float
  on_bad_image: str
  tfds_data_dir: str
  speckle_num_train: int
  speckle_num_eval: int
  speckle_pupil_fraction: float

  @classmethod
  def from_config(cls, data_config: ml_collections.ConfigDict) -> _Options:
    options = cls(**{f.name: _field(data_config, f.name) for f in dataclasses.fields(cls)})
    _check_int(options.image_size, 'image_size', 0)
    if options.channels not in (0, 1, 3) or isinstance(options.channels, bool):
      raise DataError(f"config field 'data.channels' is {options.channels!r}; allowed: 0 (keep "
                      'the source\'s own), 1 (grayscale), 3 (RGB)')
    if not (isinstance(options.holdout_fraction, (int, float))
            and 0.0 <= options.holdout_fraction < 1.0):
      raise DataError(f"config field 'data.holdout_fraction' is {options.holdout_fraction!r}; "
                      'allowed: a number in [0, 1)')
    if options.on_bad_image not in ('skip', 'error'):
      raise DataError(f"config field 'data.on_bad_image' is {options.on_bad_image!r}; allowed: "
                      "'skip', 'error'")
    if not isinstance(options.tfds_data_dir, str):
      raise DataError(f"config field 'data.tfds_data_dir' is {options.tfds_data_dir!r}; expected "
                      "a path string ('' for TFDS's default)")
    _check_int(options.speckle_num_train, 'speckle_num_train', 1)
    _check_int(options.speckle_num_eval, 'speckle_num_eval', 1)
    if not (isinstance(options.speckle_pupil_fraction, (int, float))
            and 0.0 < options.speckle_pupil_fraction <= 0.5):
      raise DataError("config field 'data.speckle_pupil_fraction' is "
                      f'{options.speckle_pupil_fraction!r}; allowed: a number in (0, 0.5]')
    return options


def _field(data_config: ml_collections.ConfigDict, name: str) -> Any:
  try:
    return data_config[name]
  except (KeyError, AttributeError):
    raise DataError(f"config field 'data.{name}' is missing; build the config on "
                    'jvae.config.base_config()') from None


def _check_int(value: Any, name: str, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise DataError(f"config field 'data.{name}' is {value!r}; allowed: an int >= {low}")


# ------------------------------------------------------------------------------- image helpers


def _channels_of_mode(mode: str) -> int:
  return 1 if mode in _GRAY_MODES else 3


def _resample_filter(height: int, width: int, size_hw: tuple[int, int]) -> Image.Resampling:
  # Bicubic interpolates well when enlarging; Lanczos widens its kernel when shrinking, which
  # filters like an area average and avoids aliasing.
  if size_hw[0] >= height and size_hw[1] >= width:
    return Image.Resampling.BICUBIC
  return Image.Resampling.LANCZOS


def _pil_to_array(im: Image.Image, size_wh: tuple[int, int], channels: int) -> np.ndarray:
  """Converts an open Pillow image to uint8 [H, W, channels], resized to `size_wh` if different."""
  target_mode = 'L' if channels == 1 else 'RGB'
  if im.mode != target_mode:
    im = im.convert(target_mode)
  if im.size != size_wh:
    im = im.resize(size_wh, _resample_filter(im.height, im.width, (size_wh[1], size_wh[0])))
  array = np.asarray(im, dtype=np.uint8)
  return array.reshape(size_wh[1], size_wh[0], channels)


def _to_gray(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> [..., 1] with Pillow's own RGB -> L weights and rounding (ITU-R 601-2)."""
  r, g, b = (images[..., i].astype(np.uint32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _resize_chunk(images: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
  """Resizes uint8 [N, H, W, C] (C in 1, 3) to [N, size, size, C] in two Pillow calls.

  Pillow resizes separably, rows then columns, rounding to uint8 in between. Tiling the images
  into one tall image for the row pass and one wide image for the column pass therefore gives
  the same pixels as resizing each image alone, with two calls instead of N.
  """
  n, height, width, c = images.shape
  mode = 'L' if c == 1 else 'RGB'

  def resize(tiled: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    pil = Image.fromarray(np.ascontiguousarray(tiled[..., 0] if c == 1 else tiled), mode)
    out = np.asarray(pil.resize(size_wh, resample))
    return out[..., None] if c == 1 else out

  x = images
  if width != size:
    x = resize(x.reshape(n * height, width, c), (size, n * height)).reshape(n, height, size, c)
  if height != size:
    wide = x.transpose(1, 0, 2, 3).reshape(height, n * size, c)
    x = resize(wide, (n * size, size)).reshape(size, n, size, c).transpose(1, 0, 2, 3)
  return np.ascontiguousarray(x)


def _prepare_images(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
  """Converts and resizes uint8 [N, H, W, C] (C in 1, 3) to the configured shape.

  Args:
    images: uint8 [N, H, W, C] in [0, 255].
    image_size: the square output side; 0 keeps H, W.
    channels: 1 or 3 output channels; 0 keeps C.

  Returns:
    uint8 [N, S, S, C'] (or [N, H, W, C'] when image_size is 0); `images` itself if nothing changes.
  """
  n, height, width, c = images.shape
  out_c = channels or c
  # Convert on the smaller side of the resize: to gray before resizing, to RGB after.
  if out_c == 1 and c == 3:
    images = _to_gray(images)
  if image_size and (height, width) != (image_size, image_size) and n:
    resample = _resample_filter(height, width, (image_size, image_size))
    chunks = [images[i:i + _RESIZE_CHUNK] for i in range(0, n, _RESIZE_CHUNK)]
    if len(chunks) == 1:
      images = _resize_chunk(chunks[0], image_size, resample)
    else:
      # Pillow releases the GIL while resampling, so threads use all cores.
      with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        resized = list(pool.map(lambda x: _resize_chunk(x, image_size, resample), chunks))
      images = np.concatenate(resized)
  if out_c == 3 and images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def _holdout(n: int, fraction: float, seed: int, split: str, what: str) -> np.ndarray:
  """Positions (sorted, int64) of `split` in a collection of `n` items without its own splits.

  The items are permuted with `default_rng(seed)`; the last `fraction` of the permutation is the
  held-out part ('test', 'val', 'validation' all name it), the rest is 'train'.
  """
  if split != 'train' and split not in HOLDOUT_SPLITS:
    raise DataError(f'{what} has no split {split!r}: it has no splits of its own, so it serves '
                    f"'train' and a held-out part named {', '.join(map(repr, HOLDOUT_SPLITS))}")
  num_eval = int(round(n * fraction))
  if fraction > 0 and n >= 2:
    # A positive fraction always holds out something and always leaves something to train on.
    num_eval = min(max(num_eval, 1), n - 1)
  permutation = np.random.default_rng(seed).permutation(n)
  part = permutation[:n - num_eval] if split == 'train' else permutation[n - num_eval:]
  if not len(part):
    raise DataError(f'{what}: split {split!r} is empty ({n} items, data.holdout_fraction='
                    f'{fraction}); raise data.holdout_fraction or use a source with its own '
                    'splits')
  return np.sort(part).astype(np.int64)


def _split_aliases(split: str) -> tuple[str, ...]:
  if split == 'val':
    return ('val', 'validation')
  if split == 'validation':
    return ('validation', 'val')
  return (split,)


def _array_source(name: str, images: np.ndarray, labels: np.ndarray | None, options: _Options,
                  num_classes: int, class_names: tuple[str, ...],
                  source_indices: np.ndarray | None = None) -> ArraySource:
  images = _prepare_images(images, options.image_size, options.channels)
  info = SourceInfo(image_shape=tuple(int(d) for d in images.shape[1:]),
                    num_classes=num_classes, class_names=class_names)
  return ArraySource(name, images, labels, info, source_indices)


# ------------------------------------------------------------------------------------------ tfds


def _tfds_failure(name: str, split: str, data_dir: str | None, error: Exception) -> DataError:
  reason = (str(error).strip().splitlines() or [''])[0][:300]
  where = data_dir or "TFDS's default data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  return DataError(
      f'TFDS dataset {name!r} (split {split!r}) could not be loaded: {type(error).__name__}: '
      f'{reason}. It must already be prepared (array_record format) in {where}; this library does '
      f'not download. Prepare it where there is network access (`tfds build {name} '
      "--file_format=array_record`) and set data.tfds_data_dir, or use an offline source: "
      "data.source='npz:<path>' (e.g. an .npz from the shared data folder, keys x_<split>, "
      "y_<split>) or 'folder:<path>' (a folder of image files).")


def _open_tfds(name: str, split: str, options: _Options) -> TfdsSource:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'data.source tfds:{name} needs the tensorflow-datasets package, which is not '
                    "installed; use an offline source: 'npz:<path>' or 'folder:<path>'") from e
  data_dir = options.tfds_data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    known_splits = sorted(builder.info.splits.keys())
    features = builder.info.features
  except Exception as e:  # TFDS raises many types (not found, no network, bad metadata)
    raise _tfds_failure(name, split, data_dir, e) from e

  tfds_split = split
  # Unprepared (or mocked) builders know no splits; then TFDS itself judges the split name.
  if known_splits:
    for alias in _split_aliases(split):
      if alias in known_splits:
        tfds_split = alias
        break
    base = tfds_split.split('[', 1)[0]  # 'train[:80%]' slices are TFDS syntax
    if base not in known_splits:
      raise DataError(f'TFDS dataset {name!r} has no split {split!r}; its splits: '
                      f'{", ".join(known_splits)}')

  feature_keys = list(features.keys()) if hasattr(features, 'keys') else []
  if 'image' not in feature_keys:
    raise DataError(f"TFDS dataset {name!r} has no 'image' feature; its features: "
                    f'{", ".join(feature_keys)}')
  native = tuple(features['image'].shape)
  if len(native) == 2:
    native = (*native, 1)
  if len(native) != 3 or native[-1] not in (1, 3, None):
    raise DataError(f"TFDS dataset {name!r}: 'image' has shape {native}; only [H, W, 1] and "
                    '[H, W, 3] images are supported')
  height, width, native_c = native
  if not options.image_size and (height is None or width is None):
    raise DataError(f'TFDS dataset {name!r} has images of varying size {native}; set '
                    'data.image_size to resize them all to one square size')
  if not options.channels and native_c is None:
    raise DataError(f'TFDS dataset {name!r} does not fix its channel count; set data.channels '
                    'to 1 (grayscale) or 3 (RGB)')
  # Only a ClassLabel gives class ids; a Text label (lfw's person names) leaves records unlabeled.
  has_label = 'label' in feature_keys and hasattr(features['label'], 'num_classes')
  label_feature = features['label'] if has_label else None
  class_names = tuple(getattr(label_feature, 'names', None) or ())
  num_classes = int(getattr(label_feature, 'num_classes', 0) or 0) if has_label else 0

  try:
    data_source = tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=False)
  except Exception as e:  # not prepared, wrong file format, unknown split
    raise _tfds_failure(name, split, data_dir, e) from e

  size = options.image_size
  shape = (size or height, size or width, options.channels or native_c)
  info = SourceInfo(image_shape=shape, num_classes=num_classes, class_names=class_names)
  return TfdsSource(f'tfds:{name} split={tfds_split!r}', data_source, info, size,
                    options.channels, has_label)


# ------------------------------------------------------------------------------------------- npz


def _open_npz(path_text: str, split: str, options: _Options) -> ArraySource:
  path = Path(path_text).expanduser()
  what = f'npz source {str(path)!r}'
  if not path.exists():
    raise DataError(f'{what}: file not found (relative paths are from {os.getcwd()})')
  if not path.is_file():
    raise DataError(f'{what}: is a directory, not an .npz file; for a folder of images use '
                    f"data.source='folder:{path_text}'")
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'{what}: cannot be read as a numpy .npz archive: {e}') from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataError(f'{what}: holds a single array, not an .npz archive with keys x_<split> '
                    '(and optionally y_<split>, class_names); save with np.savez')
  with archive:
    keys = list(archive.files)
    implied = sorted(k[2:] for k in keys if k.startswith('x_') and len(k) > 2)
    x_key = next((f'x_{s}' for s in _split_aliases(split) if f'x_{s}' in keys), None)
    if x_key is None:
      raise DataError(
          f'{what}: no key x_{split} for split {split!r}. Keys in the file: '
          f'{", ".join(keys) or "(none)"}; splits they imply: {", ".join(implied) or "(none)"}. '
          'Images must be stored as x_<split> (uint8 [N, H, W] or [N, H, W, C], C in 1, 3) with '
          'optional labels y_<split> (integer [N]).')
    split_name = x_key[2:]
    images = _read_key(archive, x_key, what)
    if images.dtype != np.uint8:
      raise DataError(f'{what}: {x_key} has dtype {images.dtype}; images must be uint8 in '
                      '[0, 255] (convert with np.clip(x * 255, 0, 255).astype(np.uint8) for '
                      'floats in [0, 1])')
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise DataError(f'{what}: {x_key} has shape {images.shape}; allowed: [N, H, W] or '
                      '[N, H, W, C] with C in 1, 3')
    if not len(images):
      raise DataError(f'{what}: {x_key} holds no images')

    labels = None
    label_max = -1
    y_key = f'y_{split_name}'
    if y_key in keys:
      labels = _check_labels(_read_key(archive, y_key, what), y_key, len(images), what)
    # num_classes counts every split's labels, so train and test agree on it.
    for key in keys:
      if key.startswith('y_'):
        y = labels if key == y_key else _check_labels(_read_key(archive, key, what), key, None,
                                                     what)
        if len(y):
          label_max = max(label_max, int(y.max()))

    class_names: tuple[str, ...] = ()
    if 'class_names' in keys:
      names = _read_key(archive, 'class_names', what)
      if names.ndim != 1 or names.dtype.kind not in 'US':
        raise DataError(f'{what}: class_names has dtype {names.dtype} and shape {names.shape}; '
                        'expected a 1-D string array')
      class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
  num_classes = 0 if labels is None else max(label_max + 1, len(class_names))
  return _array_source(f'npz:{path} split={split_name!r}', images, labels, options, num_classes,
                       class_names)


def _read_key(archive: Any, key: str, what: str) -> np.ndarray:
  try:
    return archive[key]
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    # Object arrays need pickle, which is refused: an .npz must be plain arrays.
    raise DataError(f'{what}: cannot read {key}: {e}') from e


def _check_labels(labels: np.ndarray, key: str, expected_len: int | None,
                  what: str) -> np.ndarray:
  if labels.dtype.kind not in 'iu':
    raise DataError(f'{what}: {key} has dtype {labels.dtype}; labels must be integers')
  if labels.ndim != 1:
    raise DataError(f'{what}: {key} has shape {labels.shape}; labels must be 1-D [N]')
  if expected_len is not None and len(labels) != expected_len:
    raise DataError(f'{what}: {key} has {len(labels)} labels but x_{key[2:]} has '
                    f'{expected_len} images; they must match')
  if len(labels) and (int(labels.min()) < -1 or int(labels.max()) > np.iinfo(np.int32).max):
    raise DataError(f'{what}: {key} has labels in [{labels.min()}, {labels.max()}]; allowed: '
                    'class ids >= 0, or -1 for unlabeled')
  return labels


# ---------------------------------------------------------------------------------------- folder


def _is_image_file(path: Path) -> bool:
  # Dot-files include macOS '._name.jpg' resource forks, which are not images.
  return (path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith('.')
          and path.is_file())


def _list_images(directory: Path) -> list[tuple[Path, str | None]]:
  """(file, class folder name or None) for the images in `directory`, sorted by path.

  Images directly in `directory` are unlabeled; images anywhere below a subfolder belong to the
  class named after that subfolder.
  """
  found = []
  for entry in sorted(directory.iterdir()):
    if entry.name.startswith('.'):
      continue
    if entry.is_dir():
      found.extend((p, entry.name) for p in sorted(entry.rglob('*'))
                   if _is_image_file(p) and not any(
                       part.startswith('.') for part in p.relative_to(entry).parts))
    elif _is_image_file(entry):
      found.append((entry, None))
  return found


def _scan_image(path: Path) -> tuple[tuple[int, int] | None, str | None, str | None]:
  """((width, height), mode, None) for a readable image, or (None, None, reason).

  The whole file is decoded, since headers alone do not reveal truncation. JPEGs are decoded at
  1/8 scale (a DCT-domain shortcut in libjpeg): cheaper, but still reads every byte.
  """
  try:
    with Image.open(path) as im:
      size, mode = im.size, im.mode
      if im.format == 'JPEG':
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
      im.load()
    return size, mode, None
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError
    return None, None, f'{type(e).__name__}: {e}'


def _scan_images(paths: Sequence[Path]) -> list[tuple[tuple[int, int] | None, str | None,
                                                        str | None]]:
  """`_scan_image` of every path, in order."""
  # Decoding dominates and Pillow releases the GIL while decoding, so threads scale.
  workers = min(32, 4 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(_scan_image, paths))


def _common_shape(where: str, files: Sequence[tuple[Path, tuple[int, int], str]],
                  options: _Options) -> tuple[int, int, int]:
  """(H, W, C) of the records read from `files`, non-empty (path, (width, height), mode) triples.

  Raises DataError when the files differ in size or colour and data.image_size or data.channels
  does not make them alike.
  """
  first_path, first_size, first_mode = files[0]
  if not options.image_size:
    other = next(((p, s) for p, s, _ in files if s != first_size), None)
    if other is not None:
      raise DataError(f'{where}: images differ in size: {first_path} is {first_size[0]}x'
                      f'{first_size[1]} but {other[0]} is {other[1][0]}x{other[1][1]} (width x '
                      'height); set data.image_size to resize them all to one square size')
  if not options.channels:
    first_c = _channels_of_mode(first_mode)
    other = next(((p, m) for p, _, m in files if _channels_of_mode(m) != first_c), None)
    if other is not None:
      raise DataError(f'{where}: images differ in colour: {first_path} is mode {first_mode} but '
                      f'{other[0]} is mode {other[1]}; set data.channels to 1 (grayscale) or 3 '
                      '(RGB) to convert them all')
  width, height = (options.image_size,) * 2 if options.image_size else first_size
  return height, width, options.channels or _channels_of_mode(first_mode)


def _open_folder(path_text: str, split: str, seed: int, options: _Options) -> FolderSource:
  root = Path(path_text).expanduser()
  what = f'folder source {str(root)!r}'
  extensions = ', '.join(e[1:] for e in IMAGE_EXTENSIONS)
  if not root.exists():
    raise DataError(f'{what}: folder not found (relative paths are from {os.getcwd()})')
  if not root.is_dir():
    raise DataError(f'{what}: is a file, not a folder; for an .npz archive use '
                    f"data.source='npz:{path_text}'")

  split_dirs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and d.name in SPLIT_DIRS}
  if split_dirs:
    split_name = next((s for s in _split_aliases(split) if s in split_dirs), None)
    if split_name is None:
      raise DataError(f'{what} has no split folder for split {split!r}; its split folders: '
                      f'{", ".join(split_dirs)}')
    split_root = split_dirs[split_name]
    entries = _list_images(split_root)
    if not entries:
      raise DataError(f'{what}: split folder {str(split_root)!r} holds no images (looked for '
                      f'files ending in {extensions}, case-insensitive, directly or in class '
                      'subfolders)')
    # Classes come from all split folders so that a class missing from one split keeps its id.
    class_set = {c for d in split_dirs.values() for _, c in _list_images(d) if c is not None}
    where = f'{what} split {split_name!r}'
  else:
    entries = _list_images(root)
    if not entries:
      raise DataError(f'{what} holds no images (looked for files ending in {extensions}, '
                      'case-insensitive, directly or in class subfolders, or in split folders '
                      f'{", ".join(SPLIT_DIRS)})')
    class_set = {c for _, c in entries if c is not None}
    positions = _holdout(len(entries), options.holdout_fraction, seed, split, what)
    entries = [entries[i] for i in positions]
    where = f'{what} split {split!r} (held out by seed {seed})'
  class_names = tuple(sorted(class_set))
  class_ids = {c: i for i, c in enumerate(class_names)}

  paths = [p for p, _ in entries]
  scans = _scan_images(paths)

  bad = [(p, reason) for p, (_, _, reason) in zip(paths, scans, strict=True) if reason is not None]
  if bad and options.on_bad_image == 'error':
    path, reason = bad[0]
    raise DataError(f'{where}: cannot read image {path} ({reason}); {len(bad)} of {len(paths)} '
                    "files are unreadable. Fix or remove them, or set data.on_bad_image='skip' "
                    'to leave them out')
  if bad:
    logging.warning('%s: skipping %d unreadable image file(s) of %d, e.g. %s (%s)', where,
                    len(bad), len(paths), bad[0][0], bad[0][1])
  good = [(p, c, size, mode) for (p, c), (size, mode, reason) in zip(entries, scans, strict=True)
          if reason is None]
  if not good:
    raise DataError(f'{where}: none of its {len(paths)} image files can be read, e.g. '
                    f'{bad[0][0]} ({bad[0][1]})')

  info = SourceInfo(
      image_shape=_common_shape(where, [(p, size, mode) for p, _, size, mode in good], options),
      num_classes=len(class_names),
      class_names=class_names,
      bad_files=tuple(str(p) for p, _ in bad))
  labels = [-1 if c is None else class_ids[c] for _, c, _, _ in good]
  return FolderSource(where, [str(p) for p, _, _, _ in good], labels, info)


# ----------------------------------------------------------------------------------------- pairs

# Unmatched names listed per side in a pair source's report.
_MAX_LISTED_NAMES = 10


def _images_by_name(directory: Path, where: str) -> dict[str, Path]:
  """{name: file} for the images in `directory` (and its subfolders); name = relative path minus
  the extension, the key that pairs a distorted file with its clear one."""
  found: dict[str, Path] = {}
  for path, _ in _list_images(directory):
    name = path.relative_to(directory).with_suffix('').as_posix()
    if name in found:
      raise DataError(f'{where}: {found[name]} and {path} have the same name {name!r}; a name '
                      'must be unique in each folder so that it pairs with one image')
    found[name] = path
  return found


def _listed(names: Sequence[str]) -> str:
  shown = ', '.join(repr(n) for n in names[:_MAX_LISTED_NAMES])
  more = len(names) - _MAX_LISTED_NAMES
  return shown + (f' and {more} more' if more > 0 else '')


def _open_pairs(spec: str, split: str, seed: int, options: _Options) -> PairSource:
  """`pairs:<distorted_dir>,<clear_dir>`: images matched by name (relative path minus extension)."""
  parts = spec.split(',')
  if len(parts) != 2 or not all(p.strip() for p in parts):
    raise DataError(f"config field 'data.source' is 'pairs:{spec}'; expected "
                    'pairs:<distorted_dir>,<clear_dir>: two folders separated by one comma')
  distorted_root, clear_root = (Path(p.strip()).expanduser() for p in parts)
  what = f'pairs source (distorted {str(distorted_root)!r}, clear {str(clear_root)!r})'
  for role, root in (('distorted', distorted_root), ('clear', clear_root)):
    if not root.is_dir():
      state = 'is a file, not a folder' if root.exists() else 'folder not found'
      raise DataError(f'{what}: {role} {str(root)!r}: {state} (relative paths are from '
                      f'{os.getcwd()})')

  split_dirs = [{d.name: d for d in sorted(root.iterdir()) if d.is_dir() and d.name in SPLIT_DIRS}
                for root in (distorted_root, clear_root)]
  if bool(split_dirs[0]) != bool(split_dirs[1]):
    has, lacks = ('distorted', 'clear') if split_dirs[0] else ('clear', 'distorted')
    raise DataError(f'{what}: the {has} folder has split folders ({", ".join(SPLIT_DIRS)}) but '
                    f'the {lacks} folder has none; give both the same layout')
  if split_dirs[0]:
    split_name = next((s for s in _split_aliases(split)
                       if s in split_dirs[0] and s in split_dirs[1]), None)
    if split_name is None:
      raise DataError(f'{what} has no split folder for split {split!r} in both folders; split '
                      f'folders: distorted {", ".join(split_dirs[0])}, clear '
                      f'{", ".join(split_dirs[1])}')
    distorted_dir, clear_dir = split_dirs[0][split_name], split_dirs[1][split_name]
    where = f'{what} split {split_name!r}'
  else:
    distorted_dir, clear_dir = distorted_root, clear_root
    where = f'{what} split {split!r} (held out by seed {seed})'

  distorted = _images_by_name(distorted_dir, where)
  clear = _images_by_name(clear_dir, where)
  names = sorted(distorted.keys() & clear.keys())
  only_distorted = sorted(distorted.keys() - clear.keys())
  only_clear = sorted(clear.keys() - distorted.keys())
  if not names:
    raise DataError(f'{where}: no image names match between {str(distorted_dir)!r} '
                    f'({len(distorted)} images, e.g. {_listed(only_distorted) or "none"}) and '
                    f'{str(clear_dir)!r} ({len(clear)} images, e.g. {_listed(only_clear) or "none"}'
                    '); pairs are matched by file name without its extension')
  if only_distorted or only_clear:
    unmatched = (f'{where}: {len(only_distorted)} distorted image(s) have no clear image of the '
                 f'same name ({_listed(only_distorted) or "none"}) and {len(only_clear)} clear '
                 f'image(s) have no distorted one ({_listed(only_clear) or "none"})')
    if options.on_bad_image == 'error':
      raise DataError(f"{unmatched}. Add or remove them, or set data.on_bad_image='skip' to "
                      'leave them out')
    logging.warning('%s; skipping them, %d pairs remain', unmatched, len(names))
  if not split_dirs[0]:
    # Held out after matching, so the split depends on the pairs alone, not on stray files.
    names = [names[i] for i in _holdout(len(names), options.holdout_fraction, seed, split, what)]

  pairs = [(n, distorted[n], clear[n]) for n in names]
  scans = _scan_images([d for _, d, _ in pairs] + [c for _, _, c in pairs])
  scans = list(zip(scans[:len(pairs)], scans[len(pairs):], strict=True))
  bad = [(path, scan[2]) for pair, pair_scans in zip(pairs, scans, strict=True)
         for path, scan in zip(pair[1:], pair_scans, strict=True) if scan[2] is not None]
  if bad and options.on_bad_image == 'error':
    raise DataError(f'{where}: cannot read image {bad[0][0]} ({bad[0][1]}); {len(bad)} of '
                    f"{2 * len(pairs)} files are unreadable. Fix or remove them, or set "
                    "data.on_bad_image='skip' to leave their pairs out")
  if bad:
    logging.warning('%s: skipping the pairs of %d unreadable image file(s), e.g. %s (%s)', where,
                    len(bad), bad[0][0], bad[0][1])
  good = [(pair, pair_scans) for pair, pair_scans in zip(pairs, scans, strict=True)
          if pair_scans[0][2] is None and pair_scans[1][2] is None]
  if not good:
    raise DataError(f'{where}: none of its {len(pairs)} pairs can be read, e.g. {bad[0][0]} '
                    f'({bad[0][1]})')
  mismatched = [(pair, d_scan[0], c_scan[0]) for pair, (d_scan, c_scan) in good
                if d_scan[0] != c_scan[0]]
  if mismatched:
    (name, d_path, c_path), d_size, c_size = mismatched[0]
    raise DataError(f'{where}: pair {name!r} differs in size: distorted {d_path} is '
                    f'{d_size[0]}x{d_size[1]} but clear {c_path} is {c_size[0]}x{c_size[1]} '
                    f'(width x height); {len(mismatched)} of {len(good)} pairs differ. A '
                    'distorted image must have the size of its clear image')

  files = [(path, scan[0], scan[1]) for pair, pair_scans in good
           for path, scan in zip(pair[1:], pair_scans, strict=True)]
  info = SourceInfo(image_shape=_common_shape(where, files, options), num_classes=0,
                    bad_files=tuple(str(p) for p, _ in bad))
  unlabeled = [-1] * len(good)
  return PairSource(
      where,
      FolderSource(f'{where} clear', [str(pair[2]) for pair, _ in good], unlabeled, info),
      FolderSource(f'{where} distorted', [str(pair[1]) for pair, _ in good], unlabeled, info))


# -------------------------------------------------------------------------------------- builtins


def _open_digits(split: str, seed: int, options: _Options) -> ArraySource:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  # Digits take values 0..16; the rounding maps 16 to 255 exactly.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  positions = _holdout(len(images), options.holdout_fraction, seed, split, 'builtin:digits')
  class_names = tuple(str(n) for n in digits.target_names)
  return _array_source(f'builtin:digits split={split!r} seed={seed}', images[positions],
                       labels[positions], options, len(class_names), class_names, positions)


def _open_speckle(split: str, seed: int, options: _Options) -> SpeckleSource:
  length = options.speckle_num_train if split == 'train' else options.speckle_num_eval
  return SpeckleSource(seed, split, length, options.image_size or DEFAULT_SPECKLE_SIZE,
                       options.channels or 1, options.speckle_pupil_fraction)
