"""A small CNN classifier that judges class-conditional samples: `conditional_accuracy` is the
fraction of images it assigns to the class they were generated for.

Train one on a dataset's training split (held-out accuracy is written beside the parameters):

  python -m jvae.classifier --source npz:../shared/data/mnist.npz --workdir runs/mnist_classifier

The directory then holds `params.npz` (the parameters, flattened by path; no pickle) and
`classifier.json` (the architecture, the training settings and the held-out accuracy).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import traverse_util

from jvae.config import base_config
from jvae.data import pipeline, sources
from jvae.models import encoders

PARAMS_FILE = 'params.npz'
INFO_FILE = 'classifier.json'


class Classifier(nn.Module):
  """The library's conv encoder (strided convs, flatten, Dense layers) and a Dense to logits.

  Takes float images [B, H, W, C] in [0, 1] and returns logits [B, num_classes].
  """

  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden_dims: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    features, _ = encoders.ConvEncoder(features=tuple(self.features),
                                       hidden_dims=tuple(self.hidden_dims))(images)
    return nn.Dense(self.num_classes)(features)


def _cross_entropy(model: Classifier, params, images: jax.Array, labels: jax.Array) -> jax.Array:
  logits = model.apply({'params': params}, pipeline.to_float(images, 'unit'))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_train_step(model: Classifier, optimizer: optax.GradientTransformation):
  """Builds the jitted `step(params, opt_state, batch) -> (params, opt_state, loss)` on uint8
  batches {'image': [B, H, W, C], 'label': [B]}."""

  @jax.jit
  def step(params, opt_state, batch: dict):
    loss, grads = jax.value_and_grad(functools.partial(_cross_entropy, model))(
        params, batch['image'], batch['label'])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


@functools.partial(jax.jit, static_argnames=('model',))
def _predict_batch(model: Classifier, params, images: jax.Array) -> jax.Array:
  return jnp.argmax(model.apply({'params': params}, images), axis=-1)


def predict(params, images, model: Classifier | None = None, batch_size: int = 1000
            ) -> np.ndarray:
  """Predicted classes [N] int32 of float images [N, H, W, C] in [0, 1] (`model` defaults to
  `Classifier()`)."""
  model = model or Classifier()
  images = np.asarray(images, np.float32)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    # Pad the last chunk to the full size so one shape compiles.
    padded = np.pad(chunk, ((0, batch_size - len(chunk)),) + ((0, 0),) * (images.ndim - 1))
    out.append(np.asarray(_predict_batch(model, params, padded))[:len(chunk)])
  return np.concatenate(out).astype(np.int32) if out else np.zeros((0,), np.int32)


def conditional_accuracy(classifier_params, images, requested_labels,
                         model: Classifier | None = None) -> float:
  """Fraction of images [N, H, W, C] (floats in [0, 1]) that the classifier assigns to the class
  requested for them, requested_labels [N] ints."""
  requested = np.asarray(requested_labels)
  if len(requested) != len(images):
    raise ValueError(f'{len(images)} images but {len(requested)} requested labels')
  return float(np.mean(predict(classifier_params, images, model) == requested))


def accuracy_by_class(predicted: np.ndarray, requested: np.ndarray, num_classes: int
                      ) -> list[float | None]:
  """Per requested class, the fraction predicted as it (None for a class never requested)."""
  return [float(np.mean(predicted[requested == k] == k)) if np.any(requested == k) else None
          for k in range(num_classes)]


def evaluate(model: Classifier, params, source, data_config: ml_collections.ConfigDict,
             batch_size: int = 500) -> float:
  """Accuracy over every example of `source` (a `jvae.data.sources` split)."""
  correct = count = 0
  for batch in pipeline.eval_batches(source, data_config, batch_size):
    predicted = np.asarray(_predict_batch(model, params, pipeline.to_float(batch['image'],
                                                                           'unit')))
    mask = np.asarray(batch['mask']) > 0
    correct += int(np.sum((predicted == np.asarray(batch['label']))[mask]))
    count += int(np.sum(mask))
  return correct / max(count, 1)


def train(model: Classifier, train_source, data_config: ml_collections.ConfigDict,
          num_steps: int, batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
          log_every_steps: int = 100) -> tuple[Any, list[float]]:
  """Trains `model` with Adam on the shuffled `train_source`.

  Returns:
    (params, the mean training loss of every `log_every_steps` steps).
  """
  image_shape = tuple(train_source.info.image_shape)
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *image_shape)))['params']
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  step = make_train_step(model, optimizer)
  batches = pipeline.train_iterator(train_source, data_config, batch_size, seed)
  losses, pending = [], []
  for index in range(num_steps):
    params, opt_state, loss = step(params, opt_state, next(batches))
    pending.append(loss)
    if (index + 1) % log_every_steps == 0 or index + 1 == num_steps:
      losses.append(float(np.mean(jax.device_get(pending))))
      logging.info('classifier step %d: loss %.4f', index + 1, losses[-1])
      pending = []
  return params, losses


def save(directory: str, model: Classifier, params, info: dict[str, Any]) -> None:
  """Writes `params.npz` and `classifier.json` (the architecture plus `info`)."""
  os.makedirs(directory, exist_ok=True)
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  np.savez(os.path.join(directory, PARAMS_FILE), **{k: np.asarray(v) for k, v in flat.items()})
  record = {'num_classes': model.num_classes, 'features': list(model.features),
            'hidden_dims': list(model.hidden_dims), **info}
  with open(os.path.join(directory, INFO_FILE), 'w') as f:
    json.dump(record, f, indent=2)


def load(directory: str) -> tuple[Classifier, Any, dict[str, Any]]:
  """(model, params, the classifier.json record) of a directory written by `save`."""
  info_path = os.path.join(directory, INFO_FILE)
  if not os.path.exists(info_path):
    raise FileNotFoundError(f'{directory!r} holds no {INFO_FILE}; train a classifier with '
                            '`python -m jvae.classifier --workdir ...`')
  with open(info_path) as f:
    info = json.load(f)
  model = Classifier(info['num_classes'], tuple(info['features']), tuple(info['hidden_dims']))
  with np.load(os.path.join(directory, PARAMS_FILE), allow_pickle=False) as archive:
    flat = {k: jnp.asarray(archive[k]) for k in archive.files}
  return model, traverse_util.unflatten_dict(flat, sep='/'), info


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Directory for params.npz and classifier.json.')
  flags.DEFINE_string('source', 'npz:../shared/data/mnist.npz', 'data.source of the images.')
  flags.DEFINE_string('train_split', 'train', 'Split to train on.')
  flags.DEFINE_string('eval_split', 'test', 'Held-out split the accuracy is measured on.')
  flags.DEFINE_integer('num_classes', 10, 'Number of classes.')
  flags.DEFINE_integer('num_steps', 938, 'Training steps (938 = 2 epochs of MNIST at 128).')
  flags.DEFINE_integer('batch_size', 128, 'Batch size.')
  flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate.')
  flags.DEFINE_integer('seed', 0, 'Seed of the initialisation and the data order.')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  data_config = base_config().data
  data_config.source = FLAGS.source
  try:
    train_source = sources.open_source(data_config, FLAGS.train_split, FLAGS.seed)
    eval_source = sources.open_source(data_config, FLAGS.eval_split, FLAGS.seed)
  except (ValueError, FileNotFoundError) as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  model = Classifier(FLAGS.num_classes)
  params, losses = train(model, train_source, data_config, FLAGS.num_steps, FLAGS.batch_size,
                         FLAGS.learning_rate, FLAGS.seed)
  accuracy = evaluate(model, params, eval_source, data_config)
  info = {'source': FLAGS.source, 'train_split': FLAGS.train_split,
          'eval_split': FLAGS.eval_split, 'image_shape': list(train_source.info.image_shape),
          'num_steps': FLAGS.num_steps, 'batch_size': FLAGS.batch_size,
          'learning_rate': FLAGS.learning_rate, 'seed': FLAGS.seed, 'train_losses': losses,
          'eval_accuracy': accuracy, 'eval_count': len(eval_source)}
  save(FLAGS.workdir, model, params, info)
  print(json.dumps({'eval_split': FLAGS.eval_split, 'eval_accuracy': accuracy,
                    'final_train_loss': losses[-1]}, indent=2))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
