"""S3 conditional VAEs: the SPEC layout of the MNIST configs, conditioning, the generation API,
the judging classifier, conditional accuracy and the report, on tiny runs over the 8x8 digits."""

import importlib.util
import json
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, tiny_config

from jvae import classifier, generate, runs, trainer
from jvae.config import validate_config
from jvae.data import pipeline
from jvae.models import build_model
from jvae.reports import cvae

MNIST_SHAPE = (28, 28, 1)


def _config_file(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _param_shapes(config, image_shape):
  model = build_model(config.model, image_shape)
  labels = jnp.zeros((1,), jnp.int32) if config.model.conditioning != 'none' else None
  # eval_shape: the layout without running (or compiling) the initialisers.
  variables = jax.eval_shape(lambda key: model.init(
      {'params': key, 'latent': key}, jnp.zeros((1, *image_shape)), labels), jax.random.key(0))
  return {'/'.join(k): v.shape
          for k, v in flax.traverse_util.flatten_dict(variables['params']).items()}


def spec_kernels(latent_dim, label_width):
  """Kernel shapes of the Keras MNIST conv VAE of SPEC S3/S4 (labels of `label_width`)."""
  return {
      'encoder/Conv_0/kernel': (3, 3, 1, 32), 'encoder/Conv_1/kernel': (3, 3, 32, 64),
      'encoder/Dense_0/kernel': (7 * 7 * 64 + label_width, 128),
      'mu/kernel': (128, latent_dim), 'logvar/kernel': (128, latent_dim),
      'decoder/Dense_0/kernel': (latent_dim + label_width, 7 * 7 * 64),
      'decoder/ConvTranspose_0/kernel': (3, 3, 64, 64),
      'decoder/ConvTranspose_1/kernel': (3, 3, 64, 32),
      'decoder/Conv_0/kernel': (3, 3, 32, 1),
  }


@pytest.mark.parametrize('name, label_width', [('mnist_cvae_onehot', 10),
                                               ('mnist_cvae_embedding', 8)])
def test_the_mnist_cvae_configs_build_the_spec_s3_layout(name, label_width):
  config = _config_file(name)
  validate_config(config)
  assert (REPO / config.data.source.removeprefix('npz:')).is_file()
  # 469 batches an epoch (the last one partial in Keras; here the epochs run on without a break).
  assert config.train.batch_size == 128 and config.train.num_train_steps == 10 * 469
  assert config.loss.reconstruction == 'bernoulli' and config.loss.beta == 1.0
  assert config.train.optimizer == 'adam'
  shapes = _param_shapes(config, MNIST_SHAPE)
  assert {k: v for k, v in shapes.items() if k.endswith('kernel')} == spec_kernels(2, label_width)
  if config.model.conditioning == 'embedding':
    assert shapes['label_conditioning/Embed_0/embedding'] == (10, 8)
  else:
    assert not any(k.startswith('label_conditioning') for k in shapes)


def _tiny_cvae_config(conditioning='onehot'):
  config = tiny_config()
  config.model.latent_dim = 2
  config.model.conditioning = conditioning
  config.train.num_train_steps = 8
  return config


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A one-hot CVAE trained for 8 steps on the 8x8 digits, restored from its workdir."""
  workdir = tmp_path_factory.mktemp('cvae')
  trainer.train_and_evaluate(_tiny_cvae_config(), str(workdir))
  return runs.load_run(str(workdir), 'latest')


@pytest.fixture(scope='module')
def digits_classifier(tmp_path_factory):
  """A small classifier trained on the digits' training split, saved to and loaded from disk."""
  config = tiny_config()
  experiment = trainer.create_experiment(config)
  model = classifier.Classifier(10, features=(16, 32), hidden_dims=(64,))
  params, losses = classifier.train(model, experiment.train_source, config.data, num_steps=150,
                                    batch_size=64, learning_rate=3e-3, log_every_steps=50)
  accuracy = classifier.evaluate(model, params, experiment.eval_source, config.data)
  directory = tmp_path_factory.mktemp('classifier')
  classifier.save(str(directory), model, params, {'eval_split': 'test', 'eval_accuracy': accuracy,
                                                  'train_losses': losses})
  return directory, experiment


def test_the_classifier_learns_and_survives_saving(digits_classifier):
  directory, experiment = digits_classifier
  model, params, info = classifier.load(str(directory))
  assert info['train_losses'][-1] < 0.5 * info['train_losses'][0]
  assert info['eval_accuracy'] > 0.7, info  # ten classes: chance is 0.1
  # The reloaded parameters give the saved held-out accuracy again.
  assert classifier.evaluate(model, params, experiment.eval_source,
                             experiment.config.data) == info['eval_accuracy']


def test_conditional_accuracy_counts_the_requested_class(digits_classifier):
  directory, experiment = digits_classifier
  model, params, _ = classifier.load(str(directory))
  images = pipeline.to_float(experiment.eval_source.read_batch(np.arange(40))['image'], 'unit')
  predicted = classifier.predict(params, images, model, batch_size=16)  # a ragged last chunk
  assert predicted.shape == (40,)
  assert classifier.conditional_accuracy(params, images, predicted, model) == 1.0
  assert classifier.conditional_accuracy(params, images, (predicted + 1) % 10, model) == 0.0
  half = np.where(np.arange(40) % 2 == 0, predicted, (predicted + 3) % 10)
  assert classifier.conditional_accuracy(params, images, half, model) == 0.5
  by_class = classifier.accuracy_by_class(np.array([1, 1, 2, 0]), np.array([1, 2, 2, 0]), 4)
  assert by_class == [1.0, 1.0, 0.5, None]


def test_labels_change_samples_and_the_same_key_repeats_them(tiny_run):
  key = jax.random.key(7)
  zeros = generate.sample(tiny_run, None, key, 6, labels=0)
  ones = generate.sample(tiny_run, None, key, 6, labels=jnp.ones(6, jnp.int32))
  assert zeros.shape == (6, 8, 8, 1)
  assert float(zeros.min()) >= 0 and float(zeros.max()) <= 1
  np.testing.assert_array_equal(zeros, generate.sample(tiny_run, None, key, 6, labels=[0] * 6))
  assert float(jnp.max(jnp.abs(zeros - ones))) > 1e-3
  with pytest.raises(ValueError, match='conditioned on labels'):
    generate.sample(tiny_run, None, key, 6)


def test_sample_and_latent_grid_decode_the_latents_they_say(tiny_run):
  model, variables = tiny_run.experiment.model, tiny_run.variables
  labels = jnp.array([3, 1, 4])
  at_zero = generate.sample(model, variables, jax.random.key(0), 3, labels, temperature=0.0)
  np.testing.assert_allclose(at_zero, generate.decode(model, variables, jnp.zeros((3, 2)), labels),
                             atol=1e-6)
  np.testing.assert_allclose(generate.grid_latents(3, 1.0), [
      [-1, 1], [0, 1], [1, 1], [-1, 0], [0, 0], [1, 0], [-1, -1], [0, -1], [1, -1]])
  grid = generate.latent_grid(tiny_run, None, label=5, size=3, span=1.0)
  assert grid.shape == (9, 8, 8, 1)
  np.testing.assert_allclose(grid[2], generate.decode(model, variables, jnp.array([[1.0, 1.0]]),
                                                      jnp.array([5]))[0], atol=1e-6)


def test_encode_split_returns_every_mean_in_order(tiny_run):
  source = tiny_run.experiment.eval_source
  means, labels = generate.encode_split(tiny_run, batch_size=64)  # 360 images: a padded batch
  assert means.shape == (len(source), 2) and labels.shape == (len(source),)
  np.testing.assert_array_equal(labels, [source[i]['label'] for i in range(len(source))])
  first = source.read_batch(np.arange(5))['image']
  mu, _, _ = tiny_run.experiment.apply_fn(tiny_run.variables, pipeline.to_float(first, 'unit'),
                                          labels[:5], method='encode')
  np.testing.assert_allclose(means[:5], mu, atol=1e-5)
  model_means, _ = generate.encode_split(tiny_run.experiment.model, tiny_run.variables,
                                         source=source, value_range='unit', max_examples=7)
  np.testing.assert_allclose(model_means, means[:7], atol=1e-5)


def test_the_report_writes_figures_and_numbers(tiny_run, digits_classifier):
  directory, _ = digits_classifier
  report = cvae.cvae_report(tiny_run.workdir, str(directory), samples_per_class=3, grid_size=3)
  out_dir = pathlib.Path(tiny_run.workdir) / 'eval' / 'test'
  saved = json.loads((out_dir / 'cvae_report.json').read_text())
  metrics = json.loads((out_dir / 'metrics.json').read_text())
  assert saved == json.loads(json.dumps(report))
  assert saved['test_loss_per_image'] == metrics['metrics']['loss']
  assert saved['step'] == metrics['step'] == 8 and saved['checkpoint'] == 'latest'
  assert 0.0 <= saved['conditional_accuracy'] <= 1.0
  assert len(saved['conditional_accuracy_by_class']) == 10
  assert np.isclose(np.mean(saved['conditional_accuracy_by_class']),
                    saved['conditional_accuracy'])
  for name in ('class_conditional_samples.png', 'latent_scatter.png', 'latent_manifold.png'):
    assert (out_dir / name).stat().st_size > 1000, name
