"""Using a trained model: jvae.load's API, tiling, and the `python -m jvae.apply` command line.

One tiny VAE is trained once for the module (configs/test.py, 30 steps) and loaded once; every
test reuses its compiled functions where it can.
"""

import csv
import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from conftest import REPO, tiny_config
from PIL import Image

import jvae
from jvae import apply, checkpointing, inference, parallel, tiling, trainer
from jvae.data import pipeline, sources


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A run directory holding what `jvae.load` reads: config.json, run_info.json, a checkpoint.

  Trained for 30 steps with the trainer's own compiled step; `train_and_evaluate` would double
  the module's time with its eval, figures and TensorBoard writer. There is no best/ checkpoint,
  as in a run stopped before its first eval, so load('best') takes the latest.
  """
  path = tmp_path_factory.mktemp('run')
  config = tiny_config()
  experiment = trainer.create_experiment(config)
  state = experiment.init_state(jax.random.key(0))
  batches = pipeline.train_iterator(experiment.train_source, config.data,
                                    config.train.batch_size, config.seed)
  key = jax.random.key(1)
  for _ in range(30):
    state, _ = experiment.train_step(
        state, parallel.global_batch(next(batches), experiment.mesh), key)
  (path / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (path / 'run_info.json').write_text(json.dumps({'image_shape': list(experiment.image_shape)}))
  checkpoints = checkpointing.RunCheckpoints(str(path), 1, 'loss', 'min')
  checkpoints.save(30, state, key, batches.get_state(), config)
  checkpoints.close()
  return str(path)


@pytest.fixture(scope='module')
def model(workdir):
  return jvae.load(workdir)


@pytest.fixture(scope='module')
def held_out():
  """The first 64 held-out digits: uint8 [64, 8, 8, 1]."""
  config = tiny_config()
  source = sources.open_source(config.data, 'test', config.seed)
  return source.read_batch(np.arange(64))['image']


def test_encode_and_decode_take_any_batch_size_and_reuse_compiled_shapes(model, held_out):
  assert model.image_shape == (8, 8, 1) and model.kind == 'vae' and model.latent_dim == 4
  assert model.run.step == 30  # No best checkpoint: load('best') took the latest.
  for n in (1, 3, 17):
    mu, logvar = model.encode(held_out[:n])
    assert mu.shape == logvar.shape == (n, 4)
    assert model.decode(mu).shape == (n, 8, 8, 1)
  # Batches are padded to 1, 4 and 32: three compiled shapes, and 4 and 32 reuse theirs.
  assert model.functions['encode']._cache_size() == 3
  model.encode(held_out[:4])
  model.encode(held_out[:32])
  assert model.functions['encode']._cache_size() == 3
  # Padding does not change a result: 3 images alone (padded to 4) and as the first of 17.
  np.testing.assert_allclose(model.encode(held_out[:3])[0], model.encode(held_out[:17])[0][:3],
                             rtol=1e-5, atol=1e-6)
  # More images than max_batch go in chunks, with the same results.
  chunked = inference.LoadedModel(model.run, max_batch=8)
  np.testing.assert_allclose(chunked.encode(held_out[:17])[0], model.encode(held_out[:17])[0],
                             rtol=1e-5, atol=1e-6)


def test_reconstruct_without_a_key_is_deterministic_and_decodes_the_posterior_mean(model,
                                                                                  held_out):
  images = held_out[:3].astype(np.float32) / 255.0
  first, again = model.reconstruct(images), model.reconstruct(images)
  np.testing.assert_array_equal(first, again)
  mu, _ = model.encode(images)
  np.testing.assert_allclose(model.decode(mu), first, atol=1e-6)
  key = jax.random.key(3)
  sampled = model.reconstruct(images, key=key)
  np.testing.assert_array_equal(sampled, model.reconstruct(images, key=key))
  assert np.abs(sampled - first).max() > 1e-4  # A sampled z decodes differently from mu.


def test_images_come_back_in_the_callers_dtype_range_and_layout(model, held_out):
  digit = held_out[0, ..., 0]  # uint8 [8, 8]
  out = model.reconstruct(digit)
  assert out.dtype == np.uint8 and out.shape == (8, 8)
  unit = model.reconstruct(digit.astype(np.float32) / 255.0)
  assert unit.dtype == np.float32 and unit.shape == (8, 8)
  assert 0.0 <= unit.min() and unit.max() <= 1.0
  assert np.abs(out.astype(int) - np.round(unit * 255.0)).max() <= 1
  batch = model.reconstruct(held_out[:5, ..., 0].astype(np.float64) / 255.0)  # [B, H, W]
  assert batch.dtype == np.float64 and batch.shape == (5, 8, 8)
  rgb = np.repeat(held_out[:2], 3, axis=-1)  # An RGB batch to a grayscale model: RGB back.
  out_rgb = model.reconstruct(rgb)
  assert out_rgb.shape == (2, 8, 8, 3) and out_rgb.dtype == np.uint8
  np.testing.assert_array_equal(out_rgb[..., 0], out_rgb[..., 2])
  assert model.reconstruct(np.zeros((20, 12), np.uint8)).shape == (8, 8)  # Resized to the model.
  assert model.encode(digit)[0].shape == (4,)
  assert model.decode(np.zeros(4), dtype=np.uint8).dtype == np.uint8
  symmetric = inference.LoadedModel(model.run, float_range='symmetric')
  out_symmetric = symmetric.reconstruct(digit.astype(np.float32) / 127.5 - 1.0)
  assert out_symmetric.min() >= -1.0 and out_symmetric.max() <= 1.0
  np.testing.assert_allclose(out_symmetric, unit * 2.0 - 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="float_range='symmetric'"):
    model.reconstruct(digit.astype(np.float32) / 127.5 - 1.0)
  with pytest.raises(ValueError, match='uint8 images for 0..255'):
    model.reconstruct(digit.astype(np.float32))
  with pytest.raises(ValueError, match='dtype int64'):
    model.reconstruct(digit.astype(np.int64))


def test_interpolation_ends_at_the_codes_and_the_spherical_path_keeps_the_norms(model,
                                                                               held_out):
  a, b = held_out[0, ..., 0], held_out[1, ..., 0]
  images, codes = model.interpolate(a, b, steps=6)
  assert images.shape == (6, 8, 8) and images.dtype == np.uint8 and codes.shape == (6, 4)
  np.testing.assert_allclose(codes[0], model.encode(a)[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(codes[-1], model.encode(b)[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.diff(codes, axis=0), np.diff(codes, axis=0)[:1].repeat(5, 0),
                             atol=1e-5)  # Equal steps on a straight line.
  _, arc = model.interpolate(a, b, steps=6, spherical=True)
  norms = np.linalg.norm(arc, axis=1)
  np.testing.assert_allclose(norms, np.linspace(norms[0], norms[-1], 6), rtol=1e-5)
  np.testing.assert_allclose(arc[[0, -1]], codes[[0, -1]], rtol=1e-5, atol=1e-6)
  directions = arc / norms[:, None]
  angles = np.arccos(np.clip(np.sum(directions[1:] * directions[:-1], axis=1), -1, 1))
  np.testing.assert_allclose(angles, angles.mean(), atol=1e-4)  # Constant angular speed.
  # Linear interpolation of the norm but not of the vector: the path leaves the chord.
  assert np.abs(arc[1:-1] - codes[1:-1]).max() > 1e-4


def test_scores_rank_off_distribution_images_above_held_out_digits(model, held_out):
  normal = model.score(held_out)
  assert set(normal) == {'error', 'nelbo'}
  assert normal['error'].shape == normal['nelbo'].shape == (64,)
  assert np.all(normal['nelbo'] >= normal['error'])  # The KL is >= 0.
  inverted = model.score(255 - held_out)
  noise = model.score(np.random.default_rng(0).integers(0, 256, held_out.shape, np.uint8))
  for name in ('error', 'nelbo'):
    for other in (inverted, noise):
      # Higher on average, and nearly every off-distribution image above the typical digit.
      assert other[name].mean() > normal[name].mean(), name
      assert np.mean(other[name] > np.median(normal[name])) > 0.9, name
  single = model.score(held_out[0])
  assert np.ndim(single['error']) == 0
  assert single['error'] == pytest.approx(normal['error'][0], rel=1e-5)
  samples = model.sample(5, jax.random.key(0), temperature=0.5)
  assert samples.shape == (5, 8, 8, 1) and 0.0 <= samples.min() and samples.max() <= 1.0


def test_tiles_cover_the_image_and_blend_back_to_it():
  image = np.random.default_rng(1).random((27, 40, 3)).astype(np.float32)
  origins = tiling.tile_origins((27, 40), (8, 8), (2, 2))
  assert tuple(origins.min(0)) == (0, 0) and tuple(origins.max(0)) == (19, 32)
  for axis in (0, 1):
    starts = np.unique(origins[:, axis])
    assert np.all(np.diff(starts) <= 8 - 2)  # Neighbours overlap by at least 2 pixels.
  tiles = tiling.extract_tiles(image, origins, (8, 8))
  np.testing.assert_allclose(tiling.blend_tiles(tiles, origins, (27, 40)), image, atol=1e-6)
  one = image[:8, :8]  # A lone tile comes back bit for bit.
  np.testing.assert_array_equal(tiling.map_tiled(one, lambda t: t, (8, 8), (2, 2)), one)
  small = image[:5, :6]  # Smaller than a tile: mirror-padded, then cropped.
  np.testing.assert_array_equal(tiling.map_tiled(small, lambda t: t, (8, 8), (2, 2)), small)
  chunked = tiling.map_tiled(image, lambda t: t * 2, (8, 8), (2, 2), chunk=3)
  np.testing.assert_allclose(chunked, image * 2, atol=1e-5)


def _write_inputs(folder, held_out):
  """A few PNGs of different sizes, a JPEG, a corrupt PNG and a text file."""
  folder.mkdir()
  digits = held_out[:15, ..., 0]
  Image.fromarray(digits[0]).save(folder / 'digit.png')
  big = np.block([[digits[5 * r + c] for c in range(5)] for r in range(3)])  # 24 x 40
  big = np.concatenate([big, big[:3]])  # 27 x 40: not a multiple of the tile
  Image.fromarray(big).save(folder / 'big.png')
  Image.fromarray(np.repeat(big[:13, :20, None], 3, axis=-1)).save(folder / 'small_rgb.png')
  Image.fromarray(big[:5, :6]).save(folder / 'tiny.png')
  (folder / 'sub').mkdir()
  Image.fromarray(np.repeat(big[:24, :30, None], 3, axis=-1)).save(folder / 'sub' / 'photo.jpg',
                                                                   quality=90)
  (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really a png' * 8)
  (folder / 'notes.txt').write_text('not an image')
  return big


def test_the_apply_command_line_restores_encodes_and_scores_a_folder(tmp_path, workdir, model,
                                                                     held_out):
  big = _write_inputs(tmp_path / 'in', held_out)
  out = tmp_path / 'restored'
  flag_values = flags.FlagValues()
  apply._define_flags(flag_values)
  argv = flag_values(['apply', f'--workdir={workdir}', f'--input={tmp_path / "in"}',
                      f'--output={out}', '--task=restore', '--noprogress'])
  with pytest.raises(SystemExit) as exit_info:
    apply.main(argv, flag_values)
  assert exit_info.value.code == 1  # Some files were skipped.
  summary = json.loads((out / 'summary.json').read_text())
  skipped = {s['name']: s['reason'] for s in summary['skipped_files']}
  assert set(skipped) == {'broken.png', 'notes.txt'}
  assert skipped['broken.png'].startswith('unreadable')
  assert sorted(summary['processed_files']) == ['big.png', 'digit.png', 'small_rgb.png',
                                                'sub/photo.jpg', 'tiny.png']
  sizes = {name: Image.open(out / name).size for name in
           ('digit.png', 'big.png', 'small_rgb.png', 'sub/photo.png', 'tiny.png')}
  assert sizes == {'digit.png': (8, 8), 'big.png': (40, 27), 'small_rgb.png': (20, 13),
                   'sub/photo.png': (30, 24), 'tiny.png': (6, 5)}

  # An image of exactly the model's size: the tiled result is the plain one, bit for bit.
  digit = np.asarray(Image.open(out / 'digit.png'))
  np.testing.assert_array_equal(digit, model.restore(held_out[0, ..., 0]))
  # The large image is processed at full resolution: where one tile alone covers it, the output
  # is the model's output on that tile.
  restored = np.asarray(Image.open(out / 'big.png'))
  origins = tiling.tile_origins((27, 40), (8, 8), tiling.overlap_pixels((8, 8), 0.25))
  ys, xs = np.unique(origins[:, 0]), np.unique(origins[:, 1])
  np.testing.assert_array_equal(restored[:ys[1], :xs[1]],
                                model.restore(big[:8, :8])[:ys[1], :xs[1]])
  y0, x0 = ys[-2] + 8, xs[-2] + 8  # Below and right of the last-but-one tiles.
  np.testing.assert_array_equal(restored[y0:, x0:],
                                model.restore(big[-8:, -8:])[y0 - ys[-1]:, x0 - xs[-1]:])

  codes_dir, scores_dir = tmp_path / 'codes', tmp_path / 'scores'
  encoded = apply.apply_to_files(model, str(tmp_path / 'in'), str(codes_dir), 'encode',
                                 progress=False)
  assert len(encoded.processed) == 5 and len(encoded.skipped) == 2
  with np.load(codes_dir / 'codes.npz', allow_pickle=False) as codes:
    assert codes['names'].dtype.kind == 'U'
    assert list(codes['names']) == encoded.processed and 'sub/photo.jpg' in encoded.processed
    assert codes['codes'].shape == codes['logvar'].shape == (5, 4) and str(codes['code']) == 'mu'
    digit_row = list(codes['names']).index('digit.png')
    np.testing.assert_allclose(codes['codes'][digit_row], model.encode(held_out[0])[0],
                               rtol=1e-5, atol=1e-6)
  apply.apply_to_files(model, str(tmp_path / 'in' / 'digit.png'), str(scores_dir), 'score',
                       progress=False)
  with open(scores_dir / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['name'] for r in rows] == ['digit.png']
  assert float(rows[0]['error']) == pytest.approx(float(model.score(held_out[0])['error']),
                                                  rel=1e-5)
  with pytest.raises(ValueError, match='input folder'):
    apply.apply_to_files(model, str(tmp_path / 'in'), str(tmp_path / 'in'), 'restore')


def test_a_file_that_fails_is_named_and_an_interrupted_run_still_writes_its_summary(tmp_path):
  # A stand-in model with the attributes apply uses: no JAX, so failures are cheap to stage.
  folder = tmp_path / 'in'
  folder.mkdir()
  for name in ('a.png', 'b.png', 'c.png'):
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(folder / name)

  def restore_tiled(image, overlap, label):
    del overlap, label
    calls.append(image)
    if len(calls) == 2:
      raise FloatingPointError('model blew up')
    if len(calls) == 3 and interrupt:
      raise KeyboardInterrupt
    return image

  stub = types.SimpleNamespace(
      run=types.SimpleNamespace(workdir='stub', step=0, checkpoint='best'),
      image_shape=(8, 8, 1), max_batch=4, kind='ae', latent_dim=2,
      check_labels=lambda labels, count: None, restore_tiled=restore_tiled)
  calls, interrupt = [], False
  summary = apply.apply_to_files(stub, str(folder), str(tmp_path / 'out'), 'restore',
                                 progress=False)
  assert summary.processed == ['a.png', 'c.png']
  assert summary.skipped == [('b.png', 'failed: FloatingPointError: model blew up')]
  calls, interrupt = [], True
  with pytest.raises(KeyboardInterrupt):
    apply.apply_to_files(stub, str(folder), str(tmp_path / 'stopped'), 'restore',
                         progress=False)
  written = json.loads((tmp_path / 'stopped' / 'summary.json').read_text())
  assert written['interrupted'] == 'c.png' and written['processed_files'] == ['a.png']


def test_import_jvae_stays_light():
  code = 'import sys, jvae; print(callable(jvae.load), "jax" in sys.modules)'
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
  assert result.stdout.split() == ['True', 'False'], result.stderr


def test_reconstruct_equals_the_training_time_forward_pass(model, held_out):
  images = held_out[:5]
  experiment = model.run.experiment
  expected = experiment.apply_fn(model.variables,
                                 pipeline.to_float(jnp.asarray(images), 'unit'), None,
                                 train=False, sample=False)['reconstruction']
  np.testing.assert_allclose(model.reconstruct(images.astype(np.float32) / 255.0),
                             np.asarray(expected), atol=1e-6)


def test_tiling_a_constant_image_leaves_no_seams():
  constant = np.full((27, 40, 1), 0.3, np.float32)
  out = tiling.map_tiled(constant, lambda t: t, (8, 8), (2, 2))
  np.testing.assert_allclose(out, constant, atol=1e-6)
