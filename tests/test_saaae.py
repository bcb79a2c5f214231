"""S1, SAAAE: the anchors' noise masks, their normalisation, the KL weighting, sizes and wiring."""

import json
import runpy

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from jvae import anchor_plots, corruptions, losses, parallel, runs, trainer
from jvae.config import base_config, validate_config
from jvae.models import ANCHORS, anchors, build_model
from jvae.reports import saaae as saaae_report
from jvae.train_state import count_parameters
from jvae.trainer import MINIMAL_XLA_OPTIMIZATION


def _jit(fn, **kwargs):
  return jax.jit(fn, compiler_options=MINIMAL_XLA_OPTIMIZATION, **kwargs)


def _config(name):
  return runpy.run_path(str(REPO / 'configs' / f'{name}.py'))['get_config']()


def _anchor(kind, normalization='per_example', kl_weighting='full'):
  if kind == 'channel_attention':
    return anchors.ChannelAttentionAnchor(latent_dim=6, normalization=normalization,
                                          kl_weighting=kl_weighting)
  return anchors.PatchAttentionAnchor(latent_dim=6, patch_size=4, embed_dim=8,
                                      normalization=normalization, kl_weighting=kl_weighting)


def _variables(module, *args, rngs=None):
  """Deterministic parameters scaled like a fan-in init, for use inside a jitted function.

  Tests of properties that hold for any parameters use these instead of `init`, whose random
  draws in rank-3 attention kernels take seconds to compile on CPU.
  """
  shapes = jax.eval_shape(module.init, rngs or jax.random.key(0), *args)
  return jax.tree.map(lambda v: jnp.sin(jnp.arange(v.size, dtype=jnp.float32) * 1.7 + 0.3)
                      .reshape(v.shape) / np.sqrt(v.shape[0] if v.ndim > 1 else 10.0), shapes)


def _images(seed=0, shape=(4, 8, 8, 3)):
  return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


@pytest.mark.parametrize('kind', ['channel_attention', 'patch_attention'])
def test_masks_are_in_the_unit_interval_and_span_it_per_image(kind):
  module = _anchor(kind)
  x = _images()
  out = _jit(lambda: module.apply(_variables(module, x), x))()
  mask = np.asarray(out['noise_mask'])
  assert mask.shape == (4, 6) and 'kl_weights' not in out
  assert mask.min() >= 0 and mask.max() <= 1
  np.testing.assert_allclose(mask.min(axis=1), 0, atol=1e-6)  # min-max within each image
  np.testing.assert_allclose(mask.max(axis=1), 1, atol=1e-6)
  np.testing.assert_allclose(out['anchor'], 1 - mask, atol=1e-6)


@pytest.mark.parametrize('kind', ['channel_attention', 'patch_attention'])
def test_per_example_masks_ignore_the_rest_of_the_batch_and_batch_masks_do_not(kind):
  x = _images(0)
  others = x.at[1:].set(_images(1)[1:] * 3.0)  # image 0 kept, the rest replaced

  def first_masks():
    # The normalisation has no parameters: one set serves both modules.
    variables = _variables(_anchor(kind), x)
    return {n: [_anchor(kind, n).apply(variables, b)['noise_mask'][0] for b in (x, others)]
            for n in ('per_example', 'batch')}

  masks = _jit(first_masks)()
  np.testing.assert_allclose(*masks['per_example'], atol=1e-6)
  assert np.abs(masks['batch'][0] - masks['batch'][1]).max() > 1e-3


@pytest.mark.parametrize('normalization', ['per_example', 'batch'])
def test_a_flat_anchor_gives_a_finite_mask(normalization):
  constant = jnp.full((3, 5), 0.7)
  np.testing.assert_array_equal(anchors.min_max_normalize(constant, normalization), 0.0)
  # The whole module on a constant batch with zeroed weights: a = SiLU(0) = 0 in every dimension.
  module = _anchor('channel_attention', normalization)
  x = jnp.zeros((2, 8, 8, 3))
  variables = jax.tree.map(lambda v: jnp.zeros(v.shape), jax.eval_shape(
      module.init, jax.random.key(0), x))
  mask = np.asarray(_jit(module.apply)(variables, x)['noise_mask'])
  np.testing.assert_array_equal(mask, 1.0)  # no information: the plain VAE's full noise


def test_noise_mask_kl_weighting_weights_each_dimension_and_leaves_the_anchor_alone():
  config = base_config()
  config.model.latent_dim = 4
  config.model.encoder = config.model.decoder = 'mlp'  # The KL needs no conv stack to compile.
  config.model.hidden_dims = (8,)
  config.model.anchor = 'patch_attention'
  config.model.anchor_patch_size = 4
  config.model.anchor_embed_dim = 8
  config.model.anchor_kl_weighting = 'noise_mask'
  config.loss.reconstruction = 'mse'
  model = build_model(config.model, (8, 8, 3))
  x = (_images(2) + 1) / 2
  rngs = {'params': jax.random.key(0), 'latent': jax.random.key(1)}

  def kl(params):
    outputs = model.apply({'params': params}, x, rngs={'latent': jax.random.key(1)})
    return losses.objective(outputs, x, jnp.float32(1.0), config.loss)[1]['kl'], outputs

  def both(rngs):
    params = _variables(model, x, rngs=rngs)['params']
    (weighted, outputs), grads = jax.value_and_grad(kl, has_aux=True)(params)
    # What the loss sees from an anchor with kl_weighting='full': no weights.
    unweighted = {k: v for k, v in outputs.items() if k != 'kl_weights'}
    full = losses.objective(unweighted, x, jnp.float32(1.0), config.loss)[1]['kl']
    return weighted, full, outputs, grads

  weighted, full, outputs, grads = jax.device_get(_jit(both)(rngs))
  np.testing.assert_allclose(outputs['kl_weights'], outputs['noise_mask'])
  mu, logvar = outputs['mu'].astype(np.float64), outputs['logvar'].astype(np.float64)
  per_dim = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar)
  np.testing.assert_allclose(full, np.mean(np.sum(per_dim, -1)), rtol=1e-5)
  expected = np.mean(np.sum(per_dim * outputs['noise_mask'], -1))
  np.testing.assert_allclose(weighted, expected, rtol=1e-5)
  assert weighted < full  # each image has a dimension of weight 0, the rest at most 1
  assert all(np.abs(g).max() == 0 for g in jax.tree.leaves(grads['anchor']))
  assert np.abs(grads['mu']['kernel']).max() > 0


def _shapes(model, image_shape):
  variables = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'latent': jax.random.key(1)}, jnp.zeros((2, *image_shape))))
  outputs = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((2, *image_shape)), rngs={'latent': jax.random.key(1)}), variables)
  return variables['params'], outputs


def test_the_channel_anchor_has_the_sizes_spec_s1_gives_and_the_patch_anchor_is_small():
  config = _config('saaae_cifar64')
  params, outputs = _shapes(build_model(config.model, (64, 64, 3)), (64, 64, 3))
  anchor = params['anchor']
  width = 64 * 64
  # One head over 3 tokens of 4096: query, key, value and output projections with biases.
  assert count_parameters(anchor['attention']) == 4 * width * width + 4 * width  # 67.1M
  assert anchor['attention']['query']['kernel'].shape == (width, width)
  assert anchor['to_latent']['kernel'].shape == (3 * width, 128)
  assert 68e6 < count_parameters(anchor) < 70e6  # SPEC: ~69M with its Dense
  assert 76e6 < count_parameters(params) < 78e6  # SPEC: of the model's ~77M
  assert outputs['noise_mask'].shape == (2, 128)
  patch = _config('saaae_cifar64_patch_anchor')
  patch_params, _ = _shapes(build_model(patch.model, (64, 64, 3)), (64, 64, 3))
  assert count_parameters(patch_params['anchor']) < count_parameters(anchor) / 100


def test_the_s1_backbone_layout_and_the_plain_vae_twin():
  config = _config('saaae_cifar64')
  params, outputs = _shapes(build_model(config.model, (64, 64, 3)), (64, 64, 3))
  shapes = {'/'.join(k): v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
  assert [shapes[f'encoder/Conv_{i}/kernel'] for i in range(4)] == [
      (4, 4, 3, 64), (4, 4, 64, 128), (4, 4, 128, 256), (4, 4, 256, 512)]
  assert shapes['mu/kernel'] == shapes['logvar/kernel'] == (4 * 4 * 512, 128)
  assert shapes['decoder/Dense_0/kernel'] == (128, 4 * 4 * 512)
  assert [shapes[f'decoder/ConvTranspose_{i}/kernel'] for i in range(4)] == [
      (4, 4, 512, 256), (4, 4, 256, 128), (4, 4, 128, 64), (4, 4, 64, 3)]
  assert not any(k.startswith('decoder/Conv_') for k in shapes)
  assert outputs['reconstruction'].shape == (2, 64, 64, 3)
  assert config.model.output_activation == 'tanh' and config.data.value_range == 'symmetric'
  assert config.task == 'denoise' and config.corruption.strength == 0.5
  vae = _config('vae_cifar64')
  vae_params, vae_outputs = _shapes(build_model(vae.model, (64, 64, 3)), (64, 64, 3))
  assert 'noise_mask' not in vae_outputs
  backbone = {k: v for k, v in params.items() if k != 'anchor'}
  assert jax.tree.map(lambda a: a.shape, backbone) == jax.tree.map(lambda a: a.shape, vae_params)
  for name in ('saaae_stl10', 'saaae_cifar64_patch_anchor'):
    validate_config(_config(name))


def test_per_batch_masking_is_a_corruption_kind_with_one_mask_per_batch():
  images = jnp.ones((3, 16, 16, 1))
  key = jax.random.key(0)
  per_batch, per_image = _jit(lambda k: [corruptions.corrupt(kind, k, images, 0.5, (0.0, 1.0))
                                          for kind in ('random_patches_per_batch',
                                                       'random_patches')])(key)
  per_batch, per_image = np.asarray(per_batch), np.asarray(per_image)
  assert (per_batch == 0).any()
  assert (per_batch == per_batch[:1]).all()
  assert not (per_image == per_image[:1]).all()
  config = _config('saaae_cifar64')
  config.corruption.kind = 'random_patches_per_batch'
  validate_config(config)
  assert set(ANCHORS) >= {'channel_attention', 'patch_attention'}


def test_an_anchored_model_trains_and_evaluates_in_the_compiled_steps(config):
  config.data.channels = 3
  config.data.value_range = 'symmetric'
  config.model.output_activation = 'tanh'
  config.loss.reconstruction = 'mse'
  config.task = 'denoise'
  config.corruption.kind = 'random_patches_per_batch'
  config.model.anchor = 'channel_attention'
  config.model.anchor_normalization = 'batch'
  config.model.anchor_kl_weighting = 'noise_mask'
  experiment = trainer.create_experiment(config)
  state = experiment.init_state(jax.random.key(0))
  size = config.train.batch_size
  batch = {**experiment.train_source.read_batch(np.arange(size)),
           'mask': np.ones(size, np.float32)}
  batch = parallel.global_batch(batch, experiment.mesh)
  state, metrics = experiment.train_step(state, {k: batch[k] for k in ('image', 'label')},
                                         jax.random.key(1))
  assert bool(metrics['finite']) and float(metrics['kl']) > 0
  sums = experiment.eval_step(state, batch, jax.random.key(2))
  assert float(sums['input_sse']) > 0 and np.isfinite(float(sums['loss']))


def test_the_report_figure_shows_where_the_anchor_looks(tmp_path):
  module = _anchor('patch_attention')
  x = _images()
  maps = np.asarray(_jit(lambda: saaae_report.anchor_maps(
      module, _variables(module, x)['params'], x))())
  assert maps.shape == (4, 8, 8) and maps.min() >= 0 and maps.max() > 0
  images = np.zeros((4, 8, 8, 3), np.uint8)
  path = anchor_plots.save_anchor_figure(str(tmp_path / 'a.png'), images, images, images, maps,
                                         np.linspace(0, 1, 24).reshape(4, 6), 'title')
  assert (tmp_path / 'a.png').stat().st_size > 1000 and path.endswith('a.png')


def test_high_attention_lowers_the_sampling_spread_of_the_latent():
  config = base_config()
  config.data.channels = 3
  config.model.latent_dim = 6
  config.model.encoder_features = (4,)
  config.model.hidden_dims = ()
  config.model.anchor = 'patch_attention'
  config.model.anchor_patch_size = 4
  config.model.anchor_embed_dim = 8
  model = build_model(config.model, (8, 8, 3))
  images = _images(3)
  variables = _variables(model, images, rngs={'params': jax.random.key(0),
                                              'latent': jax.random.key(1)})

  @_jit
  def draws(keys):
    return jax.vmap(lambda k: model.apply(variables, images, rngs={'latent': k}))(keys)

  outputs = draws(jax.random.split(jax.random.key(2), 4000))
  mask = np.asarray(outputs['noise_mask'][0])  # the same for every key: [B, D]
  sigma = np.exp(0.5 * np.asarray(outputs['logvar'][0]))
  spread = np.asarray(outputs['z']).std(axis=0)  # over the 4000 draws
  # z = mu + sigma * eps * (1 - a_norm): the spread is sigma * noise_mask, so the most attended
  # dimension of each image (noise_mask 0) does not move and the least attended one moves fully.
  np.testing.assert_allclose(spread, sigma * mask, rtol=0.06, atol=1e-4)
  rows = np.arange(len(mask))
  assert np.all(spread[rows, mask.argmin(1)] < 1e-4)  # the safe denominator leaves ~1e-5
  np.testing.assert_allclose(spread[rows, mask.argmax(1)], sigma[rows, mask.argmax(1)], rtol=0.06)


def test_the_constant_noise_ablation_scales_every_draw_and_reports_its_mean(config, tmp_path):
  config.model.anchor = 'constant_noise'
  config.model.anchor_noise_scale = 0.25
  experiment = trainer.create_experiment(config)
  state = experiment.init_state(jax.random.key(0))
  images = experiment.eval_source.read_batch(np.arange(4))['image']
  x = images.astype(np.float32) / 255.0
  plain = trainer.create_experiment(_config('test'))
  assert jax.tree.map(jnp.shape, state.params) == jax.tree.map(
      jnp.shape, plain.init_state(jax.random.key(0)).params)  # no parameters of its own

  def noise(model):
    out = model.apply({'params': state.params}, x, rngs={'latent': jax.random.key(1)})
    return out['z'] - out['mu']

  # The same draw as the plain VAE's from the same key, scaled by 0.25.
  np.testing.assert_allclose(noise(experiment.model), 0.25 * noise(plain.model), rtol=1e-4,
                             atol=1e-6)
  metrics = trainer.evaluate(experiment, state, jax.random.key(2), max_batches=1)
  assert metrics['noise_mask_mean'] == pytest.approx(0.25)
  # The report draws its figure too, without an anchor map (there is nothing to attend with).
  run = runs.TrainedRun(str(tmp_path), config, experiment, state, jax.random.key(0), 0, 'latest')
  path = saaae_report.anchor_figure(run, num_images=2, path=str(tmp_path / 'ablation.png'))
  assert (tmp_path / 'ablation.png').stat().st_size > 1000 and path.endswith('ablation.png')


def test_the_report_averages_over_seeds_the_runs_that_differ_only_in_seed(tmp_path):
  def fake_run(name, seed, anchor, sse):
    config = base_config()
    config.seed, config.model.anchor = seed, anchor
    workdir = tmp_path / name
    (workdir / 'eval' / 'test').mkdir(parents=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort())
    (workdir / 'eval' / 'test' / 'metrics.json').write_text(
        json.dumps({'step': 300, 'split': 'test', 'metrics': {'sse': sse, 'psnr': 20.0}}))
    (workdir / 'metrics.jsonl').write_text(''.join(
        json.dumps({'step': step, 'split': 'train', 'loss': sse * step}) + '\n'
        for step in (150, 300)))
    return str(workdir)

  workdirs = [fake_run('vae_s0', 0, 'none', 10.0), fake_run('saaae_s0', 0, 'constant_noise', 5.0),
              fake_run('vae_s1', 1, 'none', 12.0), fake_run('vae_s2', 2, 'none', 14.0)]
  rows = saaae_report.seed_summary_table(workdirs).splitlines()[2:]
  assert len(rows) == 2
  vae, anchored = (row.split(' | ') for row in rows)
  assert vae[3] == '0,1,2' and vae[4] == '12 ± 2' and vae[5] == '-' and vae[6] == '20 ± 0'
  assert anchored[3] == '0' and anchored[4] == '5'
  curves = saaae_report.training_curves_table(workdirs).splitlines()
  assert curves[2].split(' | ')[1:] == ['1800 ± 3e+02', '750 |']
  assert curves[3].startswith('| 300 | 3600 ± 6e+02 | 1500 |')


def test_the_one_head_attention_is_flax_multi_head_attention_with_one_head():
  tokens = _images(3, (2, 3, 16)).reshape(2, 3, 16)
  ours = anchors.OneHeadSelfAttention(attention_dim=8)
  flax_attention = nn.MultiHeadDotProductAttention(num_heads=1, qkv_features=8, out_features=16)
  flax_variables = _variables(flax_attention, tokens)
  p = flax_variables['params']
  # The same weights with the size-1 head axis dropped.
  params = {name: {'kernel': p[name]['kernel'].reshape(16, 8), 'bias': p[name]['bias'].reshape(8)}
            for name in ('query', 'key', 'value')}
  params['out'] = {'kernel': p['out']['kernel'].reshape(8, 16), 'bias': p['out']['bias']}
  expected = _jit(flax_attention.apply)(flax_variables, tokens)
  actual = _jit(ours.apply)({'params': params}, tokens)
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-6)
  shapes = jax.eval_shape(ours.init, jax.random.key(0), tokens)['params']
  assert jax.tree.map(lambda v: v.shape, shapes) == jax.tree.map(lambda v: v.shape, params)
