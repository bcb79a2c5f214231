"""Exports a trained run's latent codes: `python -m jvae.embed --workdir runs/<name> --split test`.

Writes one .npz of plain arrays (it loads with `np.load(path)`, no pickle):

  codes       float32 [N, D]  the autoencoder's code z, or the VAE's posterior mean mu
  labels      int32 [N]       each image's label from the source, -1 where unlabeled
  indices     int64 [N]       each image's position in the split (record 'index')
  paths       str [N]         the image files (folder sources only)
  code        str []          'z' (autoencoder) or 'mu' (VAE)
  split, checkpoint: str []; step: int64 []

`encode_split(run, split)` returns the same arrays for notebooks. The codes are computed on the
clean images of the split, with BatchNorm's running averages and without dropout, whatever the
run's task (a denoising model is encoded on clean inputs too).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator

import jax
import numpy as np
from absl import app, flags

from jvae import cli, parallel, runs
from jvae.data import pipeline, sources


def encode_fn(run: runs.TrainedRun) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
  """`(variables, images uint8 [B, H, W, C], labels [B]) -> codes [B, D]` for `run`.

  The model runs through the run's jitted `apply_fn` (which may not be nested in another jit, as
  it carries its own compiler options); only the uint8 -> float conversion runs outside it.
  """
  config = run.config
  conditioned = config.model.conditioning != 'none'

  def encode(variables: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    x = pipeline.to_float(images, config.data.value_range)
    # Both wrappers return (code or mu, logvar or None, encoder stages).
    codes, _, _ = run.experiment.apply_fn(variables, x, labels if conditioned else None,
                                          method='encode')
    return codes

  return encode


def open_split(run: runs.TrainedRun, split: str) -> sources.ImageSource:
  """Opens `split` of the run's data, checking its images have the shape the model was built for."""
  source = sources.open_source(run.config.data, split, run.config.seed)
  if tuple(source.info.image_shape) != tuple(run.experiment.image_shape):
    raise sources.DataError(f'{source.name} has images of shape {source.info.image_shape} but the '
                            f'model of {run.workdir!r} takes {run.experiment.image_shape}')
  return source


def checked_batch_size(run: runs.TrainedRun, batch_size: int = 0) -> int:
  """`batch_size`, or the run's `train.eval_batch_size` for 0; it must divide over the devices."""
  batch_size = batch_size or run.config.train.eval_batch_size
  devices = run.experiment.mesh.devices.size
  if batch_size < 1 or batch_size % devices:
    raise ValueError(f'batch_size {batch_size} does not divide over {devices} devices')
  return batch_size


def batches(run: runs.TrainedRun, source, batch_size: int = 0) -> Iterator[dict]:
  """Ordered, padded batches of `source` sharded over the run's mesh (see `pipeline.eval_batches`).

  Args:
    run: the trained run (its config's data section and its mesh are used).
    source: any image source with the run's image shape.
    batch_size: images per batch; 0 takes the run's `train.eval_batch_size`. Must divide over
      the devices.

  Yields:
    {'image': uint8 [B, H, W, C], 'label': int32 [B], 'index': int32 [B], 'mask': float32 [B]}
    global arrays (and 'input' for paired sources); the last batch is padded (mask 0).
  """
  for batch in pipeline.eval_batches(source, run.config.data, checked_batch_size(run, batch_size)):
    yield parallel.global_batch(batch, run.experiment.mesh)


def encode_split(run: runs.TrainedRun, split: str, batch_size: int = 0) -> dict[str, np.ndarray]:
  """Codes of every image of `split`, in order.

  Args:
    run: from `jvae.runs.load_run(workdir, checkpoint)`.
    split: a split of the run's data source, e.g. 'train' or 'test'.
    batch_size: images per compiled call; 0 takes the run's `train.eval_batch_size`.

  Returns:
    {'codes': float32 [N, D], 'labels': int32 [N], 'indices': int64 [N]} and, for folder
    sources, 'paths': str [N].
  """
  source = open_split(run, split)
  encode = encode_fn(run)
  variables = run.variables
  columns = {'codes': [], 'labels': [], 'indices': []}
  for batch in batches(run, source, batch_size):
    keep = np.asarray(batch['mask']) > 0
    columns['codes'].append(np.asarray(encode(variables, batch['image'], batch['label']))[keep])
    columns['labels'].append(np.asarray(batch['label'])[keep])
    columns['indices'].append(np.asarray(batch['index'])[keep])
  out = {'codes': np.concatenate(columns['codes']).astype(np.float32),
         'labels': np.concatenate(columns['labels']).astype(np.int32),
         'indices': np.concatenate(columns['indices']).astype(np.int64)}
  if hasattr(source, 'paths'):
    out['paths'] = np.asarray(source.paths, dtype=str)
  return out


def default_output(workdir: str, split: str) -> str:
  # TFDS split names may carry slices ('train[85%:]'); keep file names plain.
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', split).strip('_') or 'split'
  return os.path.join(workdir, 'embeddings', f'{name}.npz')


def export_embeddings(workdir: str, split: str | None = None, checkpoint: str | int = 'best',
                      output: str | None = None, batch_size: int = 0) -> dict:
  """Encodes `split` (default: the run's eval split) and writes the .npz; returns a summary."""
  run = runs.load_run(workdir, checkpoint, open_data=False)
  split = split or run.config.data.eval_split
  arrays = encode_split(run, split, batch_size)
  output = output or default_output(workdir, split)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  code = 'mu' if run.config.model.kind == 'vae' else 'z'
  np.savez(output, **arrays, code=np.asarray(code), split=np.asarray(split),
           checkpoint=np.asarray(run.checkpoint), step=np.int64(run.step))
  return {'output': output, 'split': split, 'checkpoint': run.checkpoint, 'step': run.step,
          'code': code, 'count': int(len(arrays['codes'])),
          'dim': int(arrays['codes'].shape[1])}


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A run directory written by train.py.')
  flags.DEFINE_string('split', None, "Split to encode; default: the config's eval split.")
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_string('output', None,
                      'The .npz to write; default <workdir>/embeddings/<split>.npz.')
  flags.DEFINE_integer('batch_size', 0, "Images per batch; 0 = the run's train.eval_batch_size.")
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.reuse_step_buffers_of(FLAGS.workdir)
  checkpoint = cli.checkpoint_arg(FLAGS.checkpoint)
  with cli.exit_on_user_error():
    summary = export_embeddings(FLAGS.workdir, FLAGS.split, checkpoint, FLAGS.output,
                                FLAGS.batch_size)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
