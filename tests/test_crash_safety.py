"""Damaged checkpoints and other failures that must not lose a user's run."""

import os
import pathlib

import numpy as np
import pytest

from jvae import checkpointing, metric_writer, trainer


def _train_losses(workdir):
  return {r['step']: r['loss'] for r in metric_writer.read_metrics(str(workdir))
          if r['split'] == 'train'}


def _damage(checkpoint_dir: pathlib.Path, how: str) -> None:
  for path in sorted((checkpoint_dir / 'state').rglob('*')):
    if path.is_file():
      if how == 'truncate':
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
      else:
        path.write_bytes(b'\x00garbage' * 8)


@pytest.mark.parametrize('how', ['truncate', 'garbage'])
def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tmp_path, config, how, caplog):
  config.train.num_train_steps = 16
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.train.num_train_steps = 12
  trainer.train_and_evaluate(config, str(tmp_path / 'damaged'))
  _damage(tmp_path / 'damaged' / 'checkpoints' / '12', how)
  config.train.num_train_steps = 16
  trainer.train_and_evaluate(config, str(tmp_path / 'damaged'))
  assert 'cannot be read' in caplog.text
  assert (tmp_path / 'damaged' / 'corrupt_checkpoints' / 'checkpoints-12').is_dir()
  # Steps 9-12 ran again from the step-8 checkpoint, exactly as they had the first time.
  assert _train_losses(tmp_path / 'damaged') == _train_losses(tmp_path / 'straight')


def test_no_readable_checkpoint_names_every_file_tried(tmp_path, config):
  config.train.num_train_steps = 8
  trainer.train_and_evaluate(config, str(tmp_path))
  for step in ('4', '8'):
    _damage(tmp_path / 'checkpoints' / step, 'garbage')
  with pytest.raises(checkpointing.CheckpointError) as error:
    trainer.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert 'no readable checkpoint' in message
  assert os.path.join('checkpoints', '8') in message and os.path.join('checkpoints', '4') in message


def test_the_codebase_never_unpickles():
  root = pathlib.Path(__file__).resolve().parents[1] / 'jvae'
  for path in root.rglob('*.py'):
    text = path.read_text()
    assert 'allow_pickle=True' not in text, path
    assert 'import pickle' not in text and 'pickle.load' not in text, path


def test_non_finite_metrics_are_named_in_the_message():
  message = trainer._nonfinite_message(7, {'loss': np.float32(np.nan), 'kl': np.float32(1.0),
                                           'grad_norm': np.float32(np.inf), 'finite': False})
  assert 'step 7' in message and 'loss' in message and 'grad_norm' in message
  assert 'kl' not in message.split('(')[0]
