"""Shared test fixtures: the tiny config every training test starts from."""

import importlib.util
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'

# Many tests (and the training subprocesses they start) compile the same tiny steps: JAX's
# persistent compilation cache, shared by the xdist workers, compiles each of them once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(REPO / '.pytest_cache' / 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def tiny_config():
  """configs/test.py: a conv VAE on the bundled 8x8 digits that compiles in about a second."""
  spec = importlib.util.spec_from_file_location('test_config', REPO / 'configs' / 'test.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture
def config():
  return tiny_config()


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  assert SHARED_DATA.is_dir(), f'the offline datasets are expected in {SHARED_DATA}'
  return SHARED_DATA

