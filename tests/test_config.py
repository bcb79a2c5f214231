"""Bad configs are rejected before anything compiles, with a message naming the field."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jvae import trainer
from jvae.config import CHOICES, RANGES, ConfigError, base_config, validate_config
from jvae.data.sources import DataError


def test_every_shipped_config_is_valid():
  import importlib.util
  for path in sorted((REPO / 'configs').glob('*.py')):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    validate_config(module.get_config())


@pytest.mark.parametrize('mutate, pattern', [
    (lambda c: c.model.__setattr__('latentdim', 3), r"unknown config field 'model.latentdim'.*"
     r'model.latent_dim'),
    (lambda c: c.__setattr__('sed', 3), r"unknown config field 'sed'"),
    (lambda c: c.loss.__setattr__('beta', -1.0), r"'loss.beta' is -1.0; allowed range"),
    (lambda c: c.train.__setattr__('batch_size', 0), r"'train.batch_size' is 0; allowed range"),
    (lambda c: c.__setattr__('seed', -1), r"'seed' is -1; allowed range \[0, inf\]"),
    (lambda c: c.model.__setattr__('kind', 'gan'), r"'model.kind' is 'gan'; allowed: 'vae', 'ae'"),
    (lambda c: c.data.__setattr__('source', 'hub:mnist'), r"'data.source'.*allowed: tfds:"),
    (lambda c: c.data.__setattr__('source', 'builtin:cifar'), r'unknown built-in'),
    (lambda c: c.train.__setattr__('batch_size', 'many'), r"'train.batch_size'.*expected int"),
    (lambda c: c.model.__setattr__('encoder_features', (8, -1)), r'tuple of positive ints'),
    (lambda c: c.loss.__setattr__('reconstruction', 'bernoulli') or
     c.data.__setattr__('value_range', 'symmetric'), r"'data.value_range' must be 'unit'"),
    (lambda c: c.__setattr__('task', 'denoise'), r"'corruption.kind' is 'none'"),
])
def test_bad_fields_are_named(mutate, pattern):
  config = tiny_config()
  with config.unlocked(), config.ignore_type():
    mutate(config)
  with pytest.raises(ConfigError, match=pattern):
    validate_config(config)


def test_a_batch_that_does_not_divide_over_the_devices_is_rejected():
  with pytest.raises(ConfigError, match=r"'train.batch_size' is 16.*3 devices"):
    validate_config(tiny_config(), num_devices=3)


def test_an_image_size_the_conv_stack_cannot_invert_is_rejected_before_compiling():
  config = tiny_config()
  config.data.image_size = 10  # 10 does not divide by 2**2.
  with pytest.raises(ConfigError, match=r'do not divide by 4.*data.image_size'):
    trainer.create_experiment(config)


def test_a_missing_data_file_is_named():
  config = tiny_config()
  config.data.source = 'npz:/no/such/file.npz'
  with pytest.raises(DataError, match='/no/such/file.npz'):
    trainer.create_experiment(config)


_fields = sorted(RANGES) + sorted(CHOICES)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(_fields),
       value=st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=8),
                       st.booleans(), st.none(), st.tuples(st.integers(-3, 3))))
def test_random_overrides_are_accepted_or_get_a_named_message(field, value):
  config = base_config()
  section, _, name = field.rpartition('.')
  target = config
  for part in filter(None, section.split('.')):
    target = target[part]
  try:
    with target.ignore_type():
      target[name] = value
    validate_config(config)
  except ConfigError as error:
    assert field in str(error) or 'config field' in str(error), str(error)


def test_the_command_line_names_an_unknown_override_and_a_bad_value(tmp_path):
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  base = [sys.executable, 'train.py', '--config', 'configs/test.py', '--workdir', str(tmp_path)]
  unknown = subprocess.run(base + ['--config.model.latentdim=3'], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
  assert unknown.returncode != 0 and 'latentdim' in unknown.stderr
  bad = subprocess.run(base + ['--config.loss.beta=-1'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and "config field 'loss.beta' is -1.0" in bad.stderr, bad.stderr
  assert not (tmp_path / 'checkpoints').exists()
