"""Embedding export and reconstruction-error anomaly detection on a tiny trained autoencoder."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from jvae import anomaly, embed, runs, trainer
from jvae.data import sources


@pytest.fixture(scope='module')
def ae_run(tmp_path_factory):
  """configs/test.py as an MSE autoencoder (digits, 8x8), trained a little."""
  config = tiny_config()
  config.model.kind = 'ae'
  config.loss.reconstruction = 'mse'
  config.train.num_train_steps = 40
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 40
  workdir = tmp_path_factory.mktemp('ae')
  trainer.train_and_evaluate(config, str(workdir))
  return str(workdir)


@pytest.fixture(scope='module')
def untrained_vae():
  """configs/test.py's conv VAE at its initial parameters, as a TrainedRun (no checkpoint)."""
  config = tiny_config()
  experiment = trainer.create_experiment(config)
  key = jax.random.key(0)
  return runs.TrainedRun('', config, experiment, experiment.init_state(key), key, 0, 'init')


def test_embed_export_writes_codes_labels_and_indices_without_pickle(ae_run, tmp_path):
  summary = embed.export_embeddings(ae_run, 'test', output=str(tmp_path / 'codes.npz'))
  run = runs.load_run(ae_run, open_data=False)
  source = sources.open_source(run.config.data, 'test', run.config.seed)
  n = len(source)
  with np.load(tmp_path / 'codes.npz', allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  assert not [k for k, v in arrays.items() if v.dtype == object]
  assert arrays['codes'].shape == (n, 4) and arrays['codes'].dtype == np.float32
  assert arrays['labels'].dtype == np.int32 and arrays['indices'].dtype == np.int64
  np.testing.assert_array_equal(arrays['labels'], [source[i]['label'] for i in range(n)])
  np.testing.assert_array_equal(arrays['indices'], np.arange(n))
  assert str(arrays['code']) == 'z' and str(arrays['split']) == 'test'
  assert int(arrays['step']) == summary['step'] == 40 and summary['count'] == n
  # Row i is the code of record i (the padded last batch included).
  images = source.read_batch(np.array([0, n - 1]))['image'].astype(np.float32) / 255
  codes, _, _ = run.experiment.apply_fn(run.variables, images, method='encode')
  np.testing.assert_allclose(arrays['codes'][[0, n - 1]], codes, rtol=1e-5, atol=1e-5)


def test_vae_codes_are_the_posterior_mean_and_nelbo_adds_the_kl(untrained_vae):
  run = untrained_vae
  codes = embed.encode_split(run, 'test', batch_size=32)
  images = run.experiment.eval_source.read_batch(np.arange(40))['image']
  mu, logvar, _ = run.experiment.apply_fn(run.variables, images.astype(np.float32) / 255,
                                          method='encode')
  np.testing.assert_allclose(codes['codes'][:40], mu, rtol=1e-5, atol=1e-5)
  error = anomaly.reconstruction_errors(run, images, score='error')
  nelbo = anomaly.reconstruction_errors(run, images, score='nelbo')
  kl = 0.5 * np.sum(np.exp(logvar) + np.square(mu) - 1 - logvar, axis=-1)
  np.testing.assert_allclose(nelbo - error, kl, rtol=1e-3, atol=1e-3)
  assert np.all(kl > 0)


def test_scores_do_not_depend_on_batching(ae_run):
  run = runs.load_run(ae_run, open_data=False)
  source = embed.open_split(run, 'test')
  images = source.read_batch(np.arange(len(source)))['image']
  by_source = anomaly.source_scores(run, source)
  by_arrays = anomaly.reconstruction_errors(run, images, batch_size=7)  # padded differently
  np.testing.assert_allclose(by_arrays, by_source, rtol=1e-5)
  # The error score is the eval step's per-image reconstruction loss.
  final = json.loads(open(os.path.join(ae_run, 'eval', 'test', 'metrics.json')).read())
  assert np.isclose(by_source.mean(), final['metrics']['reconstruction'], rtol=1e-4)
  with pytest.raises(ValueError, match="'nelbo' needs a VAE"):
    anomaly.reconstruction_errors(run, images, score='nelbo')


def test_inverted_images_are_detected_and_5_percent_of_train_is_flagged(ae_run, tmp_path):
  run = runs.load_run(ae_run, open_data=False)
  digits = embed.open_split(run, 'test')
  inverted = 255 - digits.read_batch(np.arange(len(digits)))['image'][..., 0]
  # 16x16 anomalies, so they go through the resize to the run's 8x8 like any foreign source.
  big = inverted.repeat(2, axis=1).repeat(2, axis=2)
  np.savez(tmp_path / 'inverted.npz', x_test=big)
  record = anomaly.detect_anomalies(ae_run, f'npz:{tmp_path / "inverted.npz"}',
                                    output_dir=str(tmp_path / 'out'))
  assert record['auroc'] > 0.99 and record['recall'] > 0.95
  assert abs(record['train']['flagged_fraction'] - 0.05) < 0.005
  assert record['anomalies']['count'] == record['normal']['count'] == len(digits)
  assert record['threshold'] == pytest.approx(np.percentile(
      anomaly.source_scores(run, embed.open_split(run, 'train')), 95))
  with open(tmp_path / 'out' / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['set'] for r in rows} == {'train', 'normal', 'anomaly'}
  assert len(rows) == record['train']['count'] + 2 * len(digits)
  flagged = [r for r in rows if r['set'] == 'anomaly' and r['flagged'] == '1']
  assert len(flagged) == record['anomalies']['flagged']
  for name in ('histogram.png', 'roc.png', 'examples.png'):
    assert (tmp_path / 'out' / name).stat().st_size > 1000
  assert json.loads((tmp_path / 'out' / 'metrics.json').read_text())['auroc'] == record['auroc']


def test_anomaly_cli_with_constant_images_as_anomalies(ae_run, tmp_path):
  np.savez(tmp_path / 'flat.npz', x_val=np.full((50, 8, 8), 200, np.uint8))
  result = subprocess.run(
      [sys.executable, '-m', 'jvae.anomaly', '--workdir', ae_run, '--anomalies',
       f'npz:{tmp_path / "flat.npz"}', '--anomaly_split', 'val', '--percentile', '90'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  record = json.loads((open(os.path.join(ae_run, 'eval', 'anomaly', 'metrics.json'))).read())
  assert record['percentile'] == 90 and record['anomalies']['count'] == 50
  assert record['auroc'] > 0.99
  assert abs(record['train']['flagged_fraction'] - 0.10) < 0.005


def test_select_labels_keeps_order_and_rejects_bad_classes():
  config = tiny_config()
  test = sources.open_source(config.data, 'test', 0)
  labels = test.labels()
  without_3 = sources.select_labels(test, exclude=(3,))
  assert len(without_3) == int(np.sum(labels != 3)) and 3 not in without_3.labels()
  only_3 = sources.select_labels(test, include=(3,))
  positions = np.flatnonzero(labels == 3)
  np.testing.assert_array_equal(only_3[1]['image'], test[int(positions[1])]['image'])
  assert int(only_3[1]['label']) == 3 and int(only_3[1]['index']) == 1
  with pytest.raises(sources.DataError, match=r'labels \[10\] are not classes'):
    sources.select_labels(test, include=(10,))
  config.data.exclude_labels = tuple(range(10))
  with pytest.raises(sources.DataError, match='no records left'):
    sources.open_source(config.data, 'test', 0)
  config.data.source = 'builtin:speckle'
  config.data.exclude_labels = (1,)
  with pytest.raises(sources.DataError, match='has no labels'):
    sources.open_source(config.data, 'test', 0)


def test_one_class_report_scores_the_held_out_digit_against_the_rest(tmp_path):
  from jvae.reports import one_class
  config = tiny_config()
  config.model.kind = 'ae'
  config.loss.reconstruction = 'mse'
  config.data.exclude_labels = (0,)
  config.train.num_train_steps = 40
  config.train.checkpoint_every_steps = 40
  run_dir = tmp_path / 'data.exclude_labels=(0,)'
  trainer.train_and_evaluate(config, str(run_dir))
  (rows,) = one_class.one_class_report(str(tmp_path))
  record = json.loads((run_dir / 'eval' / 'anomaly' / 'metrics.json').read_text())
  test_labels = sources.open_source(tiny_config().data, 'test', 0).labels()
  assert record['anomalies']['count'] == int(np.sum(test_labels == 0)) > 0
  assert record['normal']['count'] == int(np.sum(test_labels != 0))
  with open(run_dir / 'eval' / 'anomaly' / 'scores.csv') as f:
    scored = list(csv.DictReader(f))
  assert all(r['label'] == '0' for r in scored if r['set'] == 'anomaly')
  assert not any(r['label'] == '0' for r in scored if r['set'] in ('train', 'normal'))
  assert rows['held_out_class'] == 0 and rows['auroc'] == record['auroc']
  assert 'mean AUROC over 1 held-out classes' in (tmp_path / 'one_class.md').read_text()
