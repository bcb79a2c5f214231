"""S6, the restoration VAE: its layout, its configs, paired folders, on-the-fly distortions, and
two-stage training on pairs (a stage that resumes mid-way included)."""

from __future__ import annotations

import importlib.util
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, tiny_config
from PIL import Image

from jvae import config as config_lib
from jvae import corruptions, metric_writer, restoration, trainer
from jvae.data import pipeline, sources
from jvae.data.sources import DataError
from jvae.models import build_model

S6_CONFIGS = ('restoration_vae', 'restoration_cifar64_stage1', 'restoration_cifar64_stage2',
              'restoration_lfw64_stage1', 'restoration_lfw64_stage2')
UNIT = (0.0, 1.0)


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ---------------------------------------------------------------------------------------- model


def test_the_s6_layout_at_128x128x3():
  config = load_config('restoration_vae')
  model = build_model(config.model, (128, 128, 3))
  variables = jax.eval_shape(
      lambda key: model.init({'params': key, 'latent': key}, jnp.zeros((1, 128, 128, 3))),
      jax.random.key(0))
  shapes = _shapes(variables['params'])
  expected = {
      'encoder/Conv_0/kernel': (4, 4, 3, 32), 'encoder/Conv_1/kernel': (4, 4, 32, 64),
      'encoder/Conv_2/kernel': (4, 4, 64, 128), 'encoder/Conv_3/kernel': (4, 4, 128, 256),
      'encoder/Dense_0/kernel': (256 * 8 * 8, 512),
      'mu/kernel': (512, 128), 'logvar/kernel': (512, 128),
      'decoder/Dense_0/kernel': (128, 512), 'decoder/Dense_1/kernel': (512, 256 * 8 * 8),
      'decoder/ConvTranspose_0/kernel': (4, 4, 256, 128),
      'decoder/ConvTranspose_1/kernel': (4, 4, 128, 64),
      'decoder/ConvTranspose_2/kernel': (4, 4, 64, 32),
      'decoder/ConvTranspose_3/kernel': (4, 4, 32, 3)}
  assert {k: v for k, v in shapes.items() if k.endswith('kernel')} == expected
  assert len(shapes) == 2 * len(expected)  # a bias beside every kernel, nothing else


def test_the_first_three_decoder_stages_add_the_encoder_maps():
  config = load_config('restoration_vae')
  model = build_model(config.model, (128, 128, 3))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 128, 128, 3)), jnp.float32)

  def decodes(key):
    # One program: the decoder output from z = 0 with the true encoder maps, then with each map
    # shifted by 1 in turn.
    variables = model.init({'params': key, 'latent': key}, x)
    _, _, stages = model.apply(variables, x, method='encode')
    outputs = []
    for shifted in [None, 0, 1, 2, 3]:
      maps = [s + 1.0 if i == shifted else s for i, s in enumerate(stages)]
      outputs.append(model.apply(variables, jnp.zeros((1, 128)), None, False, maps,
                                 method='decode'))
    return stages, outputs

  stages = jax.eval_shape(decodes, jax.random.key(0))[0]
  assert [s.shape for s in stages] == [(1, 64, 64, 32), (1, 32, 32, 64), (1, 16, 16, 128),
                                       (1, 8, 8, 256)]
  plain, *shifted = jax.jit(lambda k: decodes(k)[1],
                            compiler_options=trainer.MINIMAL_XLA_OPTIMIZATION)(jax.random.key(0))
  changed = [not np.allclose(plain, out) for out in shifted]
  # The 32-, 64- and 128-channel maps are added; the deepest one only feeds the latent.
  assert changed == [True, True, True, False]


@pytest.mark.parametrize('name', S6_CONFIGS)
def test_the_s6_configs_share_one_model(name):
  config = load_config(name)
  config_lib.validate_config(config)
  m = config.model
  assert (m.kind, m.latent_dim, m.encoder_features, m.decoder_features) == \
      ('vae', 128, (32, 64, 128, 256), (256, 128, 64, 32))
  assert (m.kernel_size, m.strides, m.padding, m.hidden_dims, m.decoder_hidden_dims) == \
      (4, 2, 1, (512,), (512,))
  assert (m.skip_stages, m.output_activation, config.loss.reconstruction) == (3, 'sigmoid',
                                                                              'bernoulli')
  source = (REPO / 'configs' / f'{name}.py').read_text()
  assert source.startswith('"""') and '\nCOMMAND: python train.py --config configs/' in source
  if name.endswith('stage2'):
    stage1 = load_config(name.replace('stage2', 'stage1'))
    assert config.model == stage1.model  # the stage-1 checkpoint fits
    assert config.train.init_from == 'runs/' + name.replace('stage2', 'stage1')
    assert (config.task, config.corruption.kind) == ('denoise', 'restoration_mix')
    assert config.train.learning_rate != stage1.train.learning_rate


# ---------------------------------------------------------------------------------- distortions


def test_restoration_mix_is_keyed_and_each_image_gets_one_distortion():
  images = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype(np.float32)

  @jax.jit
  def mix_and_candidates(key):
    # random_corruption's own key plan: a choice key, then one key per kind.
    _, *kind_keys = jax.random.split(key, len(corruptions.RESTORATION_KINDS) + 1)
    candidates = jnp.stack([
        corruptions.corrupt(kind, k, images, 0.5 * scale, UNIT) for kind, k, scale in zip(
            corruptions.RESTORATION_KINDS, kind_keys, corruptions.RESTORATION_SCALES)])
    return corruptions.corrupt('restoration_mix', key, images, 0.5, UNIT), candidates

  out, candidates = map(np.asarray, mix_and_candidates(jax.random.key(3)))
  np.testing.assert_array_equal(out, np.asarray(mix_and_candidates(jax.random.key(3))[0]))
  assert not np.array_equal(out, np.asarray(mix_and_candidates(jax.random.key(4))[0]))
  picked = [[np.allclose(out[i], c[i], atol=1e-6) for c in candidates] for i in range(8)]
  assert all(any(p) for p in picked)
  assert len({row.index(True) for row in picked}) >= 3  # several kinds in one batch


# ---------------------------------------------------------------------------------------- pairs


def write_pairs(root, names, size=(16, 16), seed=0, distorted_size=None, split=''):
  """Clear random images and their noisy versions under root/{distorted,clear}[/split]."""
  rng = np.random.default_rng(seed)
  for name in names:
    clear = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, clear.shape)
    distorted = np.clip(clear.astype(int) + noise, 0, 255).astype(np.uint8)
    for role, image in (('clear', clear), ('distorted', distorted)):
      folder = root / role / split
      folder.mkdir(parents=True, exist_ok=True)
      im = Image.fromarray(image)
      if role == 'distorted' and distorted_size is not None and name == names[0]:
        im = im.resize(distorted_size)
      im.save(folder / f'{name}.png')
  return f'pairs:{root / "distorted"},{root / "clear"}'


def data_config(source, **changes):
  cfg = config_lib.base_config().data
  cfg.source = source
  for key, value in changes.items():
    cfg[key] = value
  return cfg


def test_pairs_match_by_name_and_split_by_seed(tmp_path):
  names = [f'img{i:02d}' for i in range(10)]
  source = write_pairs(tmp_path, names)
  train = sources.open_source(data_config(source), 'train', 0)
  test = sources.open_source(data_config(source), 'test', 0)
  assert (len(train), len(test)) == (8, 2)
  assert train.info.image_shape == (16, 16, 3)
  train_names = {p.rsplit('/', 1)[1] for p in train.clear.paths}
  test_names = {p.rsplit('/', 1)[1] for p in test.clear.paths}
  assert not train_names & test_names and len(train_names | test_names) == 10
  record = test[1]
  assert set(record) == {'image', 'input', 'label', 'index'} and record['label'] == -1
  name = test.clear.paths[1].rsplit('/', 1)[1]
  np.testing.assert_array_equal(record['image'], np.asarray(Image.open(tmp_path / 'clear' / name)))
  np.testing.assert_array_equal(record['input'],
                                np.asarray(Image.open(tmp_path / 'distorted' / name)))
  assert repr(train) == repr(sources.open_source(data_config(source), 'train', 0))


def test_pairs_use_split_folders_when_both_have_them(tmp_path):
  write_pairs(tmp_path, ['a', 'b', 'c'], split='train')
  source = write_pairs(tmp_path, ['d', 'e'], seed=1, split='test')
  assert len(sources.open_source(data_config(source), 'train', 0)) == 3
  assert len(sources.open_source(data_config(source), 'test', 0)) == 2
  (tmp_path / 'clear' / 'val').mkdir()
  with pytest.raises(DataError, match="no split folder for split 'val' in both"):
    sources.open_source(data_config(source), 'val', 0)


def test_unmatched_names_are_listed_or_skipped(tmp_path, caplog):
  source = write_pairs(tmp_path, [f'p{i}' for i in range(6)])
  for i in range(12):
    Image.new('RGB', (16, 16)).save(tmp_path / 'clear' / f'only_clear{i:02d}.png')
  Image.new('RGB', (16, 16)).save(tmp_path / 'distorted' / 'only_distorted.png')
  with pytest.raises(DataError) as error:
    sources.open_source(data_config(source, on_bad_image='error'), 'train', 0)
  message = str(error.value)
  assert "1 distorted image(s) have no clear image of the same name ('only_distorted')" in message
  assert "12 clear image(s) have no distorted one ('only_clear00'" in message
  assert "'only_clear09' and 2 more" in message and 'only_clear10' not in message
  with caplog.at_level(logging.WARNING):
    train = sources.open_source(data_config(source), 'train', 0)
  assert len(train) + len(sources.open_source(data_config(source), 'test', 0)) == 6
  assert 'only_distorted' in caplog.text and 'skipping them' in caplog.text
  (tmp_path / 'other').mkdir()
  Image.new('RGB', (16, 16)).save(tmp_path / 'other' / 'x.png')
  with pytest.raises(DataError, match='no image names match'):
    sources.open_source(data_config(f'pairs:{tmp_path / "other"},{tmp_path / "clear"}'),
                        'train', 0)


def test_a_pair_of_different_sizes_is_rejected_by_name(tmp_path):
  source = write_pairs(tmp_path, ['cat', 'dog', 'eel', 'fox'], distorted_size=(20, 16))
  for split in ('train', 'test'):  # whichever split holds the pair names it
    try:
      sources.open_source(data_config(source, image_size=16), split, 0)
    except DataError as error:
      assert "pair 'cat' differs in size: distorted" in str(error)
      assert 'cat.png is 20x16 but clear' in str(error)
      assert 'cat.png is 16x16' in str(error)
      break
  else:
    raise AssertionError('the mismatched pair was not rejected')


def test_a_malformed_pairs_source_says_what_is_expected(tmp_path):
  with pytest.raises(DataError, match='pairs:<distorted_dir>,<clear_dir>'):
    sources.open_source(data_config(f'pairs:{tmp_path}'), 'train', 0)
  with pytest.raises(DataError, match='clear .*folder not found'):
    sources.open_source(data_config(f'pairs:{tmp_path},{tmp_path / "missing"}'), 'train', 0)


# ------------------------------------------------------------------------------------- training


def pairs_config(source):
  config = tiny_config()
  config.data.source = source
  config.data.channels = 3
  config.data.holdout_fraction = 0.25
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.num_train_steps = 8
  return config


def _train_losses(workdir):
  return {r['step']: r['loss'] for r in metric_writer.read_metrics(str(workdir))
          if r['split'] == 'train'}


def test_a_second_stage_on_pairs_trains_and_resumes_mid_stage(tmp_path):
  source = write_pairs(tmp_path / 'data', [f'im{i:02d}' for i in range(24)])
  # The stage-1 checkpoint: any run of the same model (here 2 steps on the pairs, which keeps
  # every compiled program shared with stage 2; test_training covers a real stage switch).
  config = pairs_config(source)
  config.train.num_train_steps = 2
  config.train.stage = 'stage1'
  trainer.train_and_evaluate(config, str(tmp_path / 'stage1'))

  config.train.init_from = str(tmp_path / 'stage1')
  config.train.init_from_checkpoint = 'latest'
  config.train.stage = 'stage2'
  config.train.num_train_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path / 'stage2'))
  info = json.loads((tmp_path / 'stage2' / 'run_info.json').read_text())
  assert info['stage'] == 'stage2'
  # Resumed mid-stage: init_from now names nothing, so only the run's own checkpoint can serve.
  config.train.init_from = str(tmp_path / 'no_such_run')
  config.train.num_train_steps = 8
  metrics = trainer.train_and_evaluate(config, str(tmp_path / 'stage2'))
  assert sorted(_train_losses(tmp_path / 'stage2')) == list(range(1, 9))

  # The eval scored the paired distorted images as the input baseline: recompute it.
  eval_source = sources.open_source(config.data, 'test', config.seed)
  batch = next(pipeline.eval_batches(eval_source, config.data, len(eval_source)))
  clear = batch['image'].astype(np.float32) / 255
  distorted = batch['input'].astype(np.float32) / 255
  assert metrics['input_mse'] == pytest.approx(np.mean((clear - distorted)**2), rel=1e-5)
  assert metrics['mse'] != metrics['input_mse']
  assert {'hist_corr', 'input_hist_corr', 'input_ssim'} <= set(metrics)
  assert (tmp_path / 'stage2' / 'figures' / 'reconstructions.png').stat().st_size > 1000

  # The stage comparison scores both runs on the stage-2 run's pairs: the same distorted inputs.
  record = restoration.compare_runs([str(tmp_path / 'stage1'), str(tmp_path / 'stage2')],
                                    like=str(tmp_path / 'stage2'), names=['s1', 's2'],
                                    out_dir=str(tmp_path / 'compare'))
  s1, s2 = (run['metrics'] for run in record['runs'])
  assert s1['input_mse'] == s2['input_mse'] == pytest.approx(metrics['input_mse'])
  assert [run['step'] for run in record['runs']] == [2, 8]
  assert s2['mse'] == pytest.approx(metrics['mse'], rel=1e-5)  # posterior mean: no noise
  assert (tmp_path / 'compare' / 'restorations.png').stat().st_size > 1000
  assert 'distorted input (baseline)' in restoration.markdown_table(record)
