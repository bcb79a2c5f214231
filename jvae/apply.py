"""Applies a trained model to image files:
`python -m jvae.apply --workdir runs/<name> --input <folder or image> --output <folder> --task T`.

Tasks:

  restore      one PNG per input image, same relative path and file stem, same size as the input:
               the model's deterministic output (a denoising/restoration model's clean estimate).
  reconstruct  the same computation, named for models trained to reconstruct.
  encode       codes.npz: names (fixed-width unicode [N], the input paths relative to --input),
               codes float32 [N, D] (a VAE's posterior mean, an AE's code), for VAEs logvar
               float32 [N, D], and code (str: 'mu' or 'z'). Plain arrays: np.load needs no pickle.
  score        scores.csv: name, error and, for VAEs, nelbo (see jvae.inference.LoadedModel.score).

Images of any size and common format (PNG, JPEG, BMP, GIF, WebP, TIFF) are read with Pillow and
converted to the model's channels. restore/reconstruct work at full resolution by default
(--mode=tile): the image is cut into overlapping tiles of the model's input size, which are
restored and blended back with a smooth window (jvae.tiling); --mode=resize shrinks the image to
the model's size and enlarges the result back instead. encode/score resize every image to the
model's size exactly as the training data were.

Unreadable files (and files that are not images) are skipped and listed; a file that fails
later is skipped with its error too, and an interrupted run still writes what it has. The end is
a summary (processed, skipped with reasons), also written to summary.json in --output. The exit
status is 0 when every file was processed, 1 when some were skipped, 2 when nothing could start.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging as std_logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageOps

from jvae import cli, inference
from jvae.data import sources

TASKS = ('restore', 'reconstruct', 'encode', 'score')
MODES = ('tile', 'resize')
IMAGE_EXTENSIONS = tuple(sorted({*sources.IMAGE_EXTENSIONS, '.tif', '.tiff'}))


@dataclasses.dataclass
class Summary:
  """What a run of `apply_to_files` did.

  Attributes:
    task: the task.
    processed: names (paths relative to the input) of the files processed, in order.
    skipped: (name, reason) for every file left out.
    outputs: files written (images, codes.npz, scores.csv, summary.json).
    interrupted: the name of the file being processed when the run was interrupted, or None.
  """
  task: str
  processed: list[str] = dataclasses.field(default_factory=list)
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  outputs: list[str] = dataclasses.field(default_factory=list)
  interrupted: str | None = None

  def as_dict(self) -> dict[str, Any]:
    return {'task': self.task, 'processed': len(self.processed), 'skipped': len(self.skipped),
            'skipped_files': [{'name': n, 'reason': r} for n, r in self.skipped],
            'processed_files': self.processed, 'outputs': self.outputs,
            'interrupted': self.interrupted}

  def text(self) -> str:
    total = len(self.processed) + len(self.skipped)
    lines = [f'{self.task}: processed {len(self.processed)} of {total} file(s), skipped '
             f'{len(self.skipped)}']
    lines += [f'  skipped {name}: {reason}' for name, reason in self.skipped]
    if self.interrupted is not None:
      lines.append(f'  interrupted while processing {self.interrupted}; the files after it were '
                   'not processed')
    return '\n'.join(lines)


def list_inputs(input_path: str, exclude: Path | None = None
                ) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
  """The image files under `input_path` (a folder, searched recursively, or one file).

  Files under `exclude` (an output folder inside the input folder) are left out, so that a
  second run does not take the first run's outputs for inputs.

  Returns:
    ([(path, name)], [(name, reason)]): files to read, sorted by name (the path relative to the
    folder, with '/'), and files that are not images by their extension. Hidden files and
    folders (names starting with '.') are ignored.
  """
  root = Path(input_path).expanduser()
  if not root.exists():
    raise FileNotFoundError(f'--input {input_path!r} does not exist (relative paths are from '
                            f'{os.getcwd()})')
  if root.is_file():
    candidates = [(root, root.name)]
  else:
    excluded = exclude.resolve() if exclude is not None else None
    candidates = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob('*'))
                  if p.is_file() and not any(part.startswith('.')
                                             for part in p.relative_to(root).parts)
                  and not (excluded is not None and p.resolve().is_relative_to(excluded))]
  images, others = [], []
  for path, name in candidates:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
      images.append((path, name))
    else:
      others.append((name, f'not an image file type ({path.suffix or "no extension"}); '
                           f'supported: {", ".join(e[1:] for e in IMAGE_EXTENSIONS)}'))
  return images, others


def read_image(path: Path, channels: int, size_hw: tuple[int, int] | None = None,
               upright: bool = True) -> np.ndarray:
  """Decodes an image file to uint8 [H, W, channels] (resized to `size_hw` when given).

  Args:
    path: the file.
    channels: 1 (grayscale) or 3 (RGB); other modes are converted as the data sources do.
    size_hw: resize to this (height, width) with the data sources' filters, or keep the size.
    upright: apply the EXIF orientation, so an output image looks like the input in a viewer.
      The data sources do not, so encode/score pass False to see files as training did.

  Raises:
    Whatever Pillow raises for unreadable, truncated or oversized files.
  """
  with Image.open(path) as im:
    if upright:
      im = ImageOps.exif_transpose(im)
    if size_hw is None:
      size_wh = im.size
    else:
      size_wh = (size_hw[1], size_hw[0])
      if im.format == 'JPEG' and im.size != size_wh:
        # As FolderSource does: libjpeg decodes at a reduced scale first, far cheaper for photos.
        im.draft('L' if channels == 1 else 'RGB', size_wh)
    return sources._pil_to_array(im, size_wh, channels)  # pylint: disable=protected-access


def output_names(names: list[str]) -> dict[str, str]:
  """Input name -> output PNG name: the same relative path with '.png' for its suffix.

  Inputs that would collide (a.jpg and a.png) keep their suffix: a.jpg.png, a.png.png.
  """
  stems = [str(Path(n).with_suffix('.png')) for n in names]
  counts: dict[str, int] = {}
  for stem in stems:
    counts[stem] = counts.get(stem, 0) + 1
  return {n: (s if counts[s] == 1 else f'{n}.png') for n, s in zip(names, stems)}


def _reason(error: BaseException) -> str:
  return f'{type(error).__name__}: {error}'.strip().splitlines()[0][:300]


def _save_png(image: np.ndarray, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, format='PNG')


def _restore_one(model: inference.LoadedModel, image: np.ndarray, mode: str, overlap: float,
                 label: int | None) -> np.ndarray:
  """uint8 [H, W, C] -> the restored uint8 [H, W, C], by tiles or through a resize."""
  if mode == 'tile':
    return model.restore_tiled(image, overlap, label)
  restored = model.restore(image, label)
  if restored.ndim == 2:
    restored = restored[..., None]
  height, width = image.shape[:2]
  if restored.shape[:2] == (height, width):
    return restored
  resample = sources._resample_filter(  # pylint: disable=protected-access
      restored.shape[0], restored.shape[1], (height, width))
  channels = restored.shape[-1]
  pil = Image.fromarray(restored[..., 0] if channels == 1 else restored)
  return np.asarray(pil.resize((width, height), resample)).reshape(height, width, channels)


def _chunks(items: list, size: int) -> Iterator[list]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def apply_to_files(model: inference.LoadedModel | str, input_path: str, output_dir: str,
                   task: str, checkpoint: str | int = 'best', mode: str = 'tile',
                   overlap: float = 0.25, label: int | None = None, batch_size: int = 64,
                   progress: bool = True) -> Summary:
  """Applies a trained model to the image files under `input_path`; see the module doc.

  Args:
    model: a `LoadedModel`, or a run directory to load one from (with `checkpoint`).
    input_path: a folder (searched recursively) or one image file.
    output_dir: where outputs go (created); must not be the input folder.
    task: one of TASKS.
    checkpoint: 'best', 'latest' or a step, when `model` is a run directory.
    mode: restore/reconstruct at full resolution by 'tile' or through a 'resize'.
    overlap: least tile overlap as a fraction in [0, 1) of the model's input size.
    label: the class label of every image, for label-conditioned models.
    batch_size: images (or tiles) per compiled call when `model` is a run directory; a power of
      two.
    progress: show a tqdm progress bar over the files.

  Returns:
    The `Summary`, also written to `<output_dir>/summary.json`.
  """
  if task not in TASKS:
    raise ValueError(f'task {task!r}; allowed: {", ".join(TASKS)}')
  if mode not in MODES:
    raise ValueError(f'mode {mode!r}; allowed: {", ".join(MODES)}')
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f'overlap must be a fraction in [0, 1); got {overlap}')
  out_root = Path(output_dir).expanduser()
  images, others = list_inputs(input_path, out_root)
  input_root = Path(input_path).expanduser()
  input_root = input_root if input_root.is_dir() else input_root.parent
  if out_root.resolve() == input_root.resolve():
    raise ValueError(f'--output {output_dir!r} is the input folder; choose another folder so '
                     'that no input is overwritten')
  if isinstance(model, str):
    model = inference.load(model, checkpoint, max_batch=batch_size)
  model.check_labels(label, 1)  # Fails now rather than once per file.
  out_root.mkdir(parents=True, exist_ok=True)
  summary = Summary(task, skipped=list(others))
  from tqdm import auto as tqdm_auto  # Lazy, as in the trainer.
  bar = tqdm_auto.tqdm(total=len(images), unit='image', disable=not progress,
                       dynamic_ncols=True)
  writer = _TASK_WRITERS[task](model, out_root, summary, [n for _, n in images])
  current: list[str | None] = [None]
  try:
    writer.run(images, mode, overlap, label, bar, current)
  except BaseException:
    summary.interrupted = current[0] or '(between files)'
    logging.error('stopped early:\n%s', summary.text())
    raise
  finally:
    bar.close()
    writer.close()
    summary_path = out_root / 'summary.json'
    with open(summary_path, 'w') as f:
      json.dump({**summary.as_dict(), 'workdir': model.run.workdir, 'step': model.run.step,
                 'checkpoint': model.run.checkpoint, 'mode': mode, 'overlap': overlap}, f,
                indent=2)
    summary.outputs.append(str(summary_path))
    logging.info('%s', summary.text())
  return summary


class _ImageWriter:
  """restore/reconstruct: one PNG per input, file by file."""

  def __init__(self, model, out_root: Path, summary: Summary, names: list[str]):
    self.model, self.out_root, self.summary = model, out_root, summary
    self.targets = output_names(names)

  def run(self, images, mode, overlap, label, bar, current) -> None:
    channels = self.model.image_shape[-1]
    for path, name in images:
      current[0] = name
      try:
        image = read_image(path, channels)
      except Exception as error:  # Pillow raises many types for unreadable files.
        self.summary.skipped.append((name, f'unreadable: {_reason(error)}'))
      else:
        try:
          restored = _restore_one(self.model, image, mode, overlap, label)
          target = self.out_root / self.targets[name]
          _save_png(restored, target)
          self.summary.processed.append(name)
          self.summary.outputs.append(str(target))
        except Exception as error:  # Reported with the file's name; the other files go on.
          logging.exception('failed on %s', name)
          self.summary.skipped.append((name, f'failed: {_reason(error)}'))
      current[0] = None
      bar.update(1)

  def close(self) -> None:
    pass


class _BatchWriter:
  """encode/score: files read at the model's size and run in batches of `max_batch`."""

  def __init__(self, model, out_root: Path, summary: Summary, names: list[str]):
    del names
    self.model, self.out_root, self.summary = model, out_root, summary

  def consume(self, names: list[str], images: np.ndarray, label: int | None) -> None:
    raise NotImplementedError

  def run(self, images, mode, overlap, label, bar, current) -> None:
    del mode, overlap
    height, width, channels = self.model.image_shape
    for chunk in _chunks(images, self.model.max_batch):
      names, arrays = [], []
      for path, name in chunk:
        current[0] = name
        try:
          arrays.append(read_image(path, channels, (height, width), upright=False))
          names.append(name)
        except Exception as error:  # Pillow raises many types for unreadable files.
          self.summary.skipped.append((name, f'unreadable: {_reason(error)}'))
        bar.update(1)
      current[0] = ', '.join(names)
      if names:
        try:
          self.consume(names, np.stack(arrays), label)
          self.summary.processed.extend(names)
        except Exception as error:  # The whole batch failed; each file is named.
          logging.exception('failed on %s', ', '.join(names))
          self.summary.skipped.extend((n, f'failed: {_reason(error)}') for n in names)
      current[0] = None


class _EncodeWriter(_BatchWriter):

  def __init__(self, *args):
    super().__init__(*args)
    self.names: list[str] = []
    self.codes: list[np.ndarray] = []
    self.logvars: list[np.ndarray] = []

  def consume(self, names, images, label) -> None:
    codes, logvar = self.model.encode(images, label)
    self.names.extend(names)
    self.codes.append(codes)
    if logvar is not None:
      self.logvars.append(logvar)

  def close(self) -> None:
    dim = self.model.latent_dim
    width = max([1] + [len(n) for n in self.names])
    arrays = {'names': np.array(self.names, dtype=f'<U{width}'),
              'codes': np.concatenate(self.codes) if self.codes else np.zeros((0, dim),
                                                                              np.float32),
              'code': np.array('mu' if self.model.kind == 'vae' else 'z')}
    if self.model.kind == 'vae':
      arrays['logvar'] = (np.concatenate(self.logvars) if self.logvars
                          else np.zeros((0, dim), np.float32))
    path = self.out_root / 'codes.npz'
    np.savez(path, **arrays)
    self.summary.outputs.append(str(path))


class _ScoreWriter(_BatchWriter):

  def __init__(self, *args):
    super().__init__(*args)
    self.columns = ['error'] + (['nelbo'] if self.model.kind == 'vae' else [])
    self.path = self.out_root / 'scores.csv'
    # Rows are written as they come, so an interrupted run keeps the scores it has.
    self.file = open(self.path, 'w', newline='')
    self.csv = csv.writer(self.file)
    self.csv.writerow(['name', *self.columns])

  def consume(self, names, images, label) -> None:
    scores = self.model.score(images, label)
    for index, name in enumerate(names):
      self.csv.writerow([name, *(repr(float(scores[c][index])) for c in self.columns)])
    self.file.flush()

  def close(self) -> None:
    self.file.close()
    self.summary.outputs.append(str(self.path))


_TASK_WRITERS: dict[str, Callable[..., Any]] = {
    'restore': _ImageWriter, 'reconstruct': _ImageWriter, 'encode': _EncodeWriter,
    'score': _ScoreWriter}


FLAGS = flags.FLAGS


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the CLI flags (on a fresh FlagValues in tests, so nothing global is touched)."""
  fv = {'flag_values': flag_values}
  flags.DEFINE_string('workdir', None, 'A run directory written by train.py.', **fv)
  flags.DEFINE_string('input', None, 'An image file, or a folder of them (searched recursively).',
                      **fv)
  flags.DEFINE_string('output', None, 'The folder outputs are written to (created).', **fv)
  flags.DEFINE_enum('task', 'restore', TASKS, 'restore/reconstruct: PNG images; encode: '
                    'codes.npz; score: scores.csv.', **fv)
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.", **fv)
  flags.DEFINE_enum('mode', 'tile', MODES, 'restore/reconstruct: full resolution by '
                    'overlapping tiles, or through a resize to the model size and back.', **fv)
  flags.DEFINE_float('overlap', 0.25, 'Least overlap of neighbouring tiles, a fraction of the '
                     'tile size in [0, 1).', **fv)
  flags.DEFINE_integer('label', None, 'The class label of every image (label-conditioned '
                       'models only).', **fv)
  flags.DEFINE_integer('batch_size', 64, 'Images or tiles per compiled call; a power of two.',
                       **fv)
  flags.DEFINE_bool('progress', True, 'Show a progress bar.', **fv)
  flags.mark_flags_as_required(['workdir', 'input', 'output'], flag_values=flag_values)


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of Orbax, JAX and grain, which would bury the progress bar."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(part in record.pathname
                for part in ('/orbax/', '/grain/', '/tensorstore/', '/jax/'))
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> None:
  """Runs the parsed flags; exits 0 (all processed), 1 (some skipped) or 2 (could not start)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  fv = flag_values
  cli.reuse_step_buffers_of(fv.workdir)
  try:
    summary = apply_to_files(fv.workdir, fv.input, fv.output, fv.task, fv.checkpoint, fv.mode,
                             fv.overlap, fv.label, fv.batch_size, fv.progress)
  except (ValueError, FileNotFoundError, RuntimeError) as error:
    logging.error('%s', error)
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  print(summary.text())
  sys.exit(1 if summary.skipped else 0)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
