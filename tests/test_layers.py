"""jvae.models.layers: each impl equals the other and flax's own layers, in values and grads."""

from __future__ import annotations

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae import config
from jvae.models import cpu_features, layers

# (kernel_size, strides, padding, output_padding): common decoder settings, each tried on an
# odd-by-even and an even-by-odd input (H != W, so that a swapped axis cannot pass).
CONV_TRANSPOSE_CASES = [
    (4, 2, 1, 0),
    (3, 2, 1, 1),
    (3, 2, 'SAME', 0),
    (3, 1, 'SAME', 0),
    (5, 2, 2, 1),
    (2, 2, 0, 0),
]
SPATIAL_SHAPES = [(5, 6), (8, 7)]
# Corners of the phase arithmetic, on one input shape to keep the file fast: an odd output
# (fewer rows in the last phase), kernels smaller than the stride (phases without taps, output past
# the end of the scatter result), 'VALID', and p > k - 1 (negative padding of the phase conv).
CORNER_CASES = [
    (3, 2, 1, 0),
    (1, 2, 'SAME', 0),
    (2, 3, 'SAME', 0),
    (3, 2, 'VALID', 0),
    (3, 2, 3, 1),
]
CIN, COUT = 3, 4
# Compiling, not running, is what these tiny tests spend their time on; XLA's backend optimizations
# roughly double it and are irrelevant to the identities tested here.
_QUICK_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _run_jitted(fn, *args):
  return jax.jit(fn).lower(*args).compile(_QUICK_COMPILE)(*args)


def _assert_close(actual, expected, rtol=1e-5, atol=1e-5):
  expected = np.asarray(expected)
  # Gradients are sums over many terms; scale atol with their size.
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol * scale)


_KEY = jax.random.PRNGKey(0)  # only for eval_shape of module.init


def _normal(seed, shape):
  # numpy, not jax.random: each jax.random call costs a compilation of ~1 s of its own.
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _random_params(k, cin=CIN, cout=COUT, seed=0):
  """Random kernel and non-zero bias (so bias bugs show), built without a traced module.init."""
  return {'kernel': _normal(seed, (k, k, cin, cout)), 'bias': _normal(seed + 1, (cout,))}


def _values_and_grads(apply_fns, params_list, x, cotangent):
  """For each (apply, params): y = apply(params, x) and the grads of <y, cotangent>.

  One compilation for all of them: it dominates at these sizes, and eager dispatch of the fast
  impls' many small ops is slower still.
  """
  def run(params_list, x):
    results = []
    for apply_fn, params in zip(apply_fns, params_list, strict=True):
      def loss(params, x, apply_fn=apply_fn):
        y = apply_fn({'params': params}, x)
        return jnp.sum(y * cotangent), y
      (_, y), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
      results.append((y, dx, dparams))
    return results
  return _run_jitted(run, params_list, x)


def _flax_conv_transpose(k, s, padding, output_padding):
  """The flax layer equal to our scatter semantics once its kernel is flipped spatially."""
  if isinstance(padding, str):
    flax_padding = padding
  else:
    lo = k - 1 - padding
    flax_padding = ((lo, lo + output_padding),) * 2
  return nn.ConvTranspose(COUT, (k, k), (s, s), padding=flax_padding, transpose_kernel=False)


def _expected_transpose_size(size, k, s, padding, output_padding):
  if padding == 'SAME':
    return size * s
  if padding == 'VALID':
    return size * s + max(k - s, 0)
  return (size - 1) * s - 2 * padding + k + output_padding


def _transpose_params():
  cases = [(*case, hw) for case in CONV_TRANSPOSE_CASES for hw in SPATIAL_SHAPES]
  cases += [(*case, SPATIAL_SHAPES[0]) for case in CORNER_CASES]
  return [pytest.param(*case, id=f'k{case[0]}-s{case[1]}-p{case[2]}-op{case[3]}-{case[4][0]}x'
                       f'{case[4][1]}') for case in cases]


_REWRITES = tuple(impl for impl in layers.CONV_TRANSPOSE_IMPLS if impl != 'native')


@pytest.mark.parametrize('k,s,padding,output_padding,hw', _transpose_params())
def test_conv_transpose_impls_equal_native_and_flax(k, s, padding, output_padding, hw):
  x = _normal(10, (2, *hw, CIN))
  native = layers.ConvTranspose(COUT, k, s, padding, output_padding, impl='native')
  rewrites = [native.clone(impl=impl) for impl in _REWRITES]
  params = _random_params(k)
  expected_shape = (2, *(_expected_transpose_size(n, k, s, padding, output_padding) for n in hw),
                    COUT)
  cotangent = _normal(11, expected_shape)

  flax_params = dict(params, kernel=jnp.asarray(np.asarray(params['kernel'])[::-1, ::-1]))
  reference = _flax_conv_transpose(k, s, padding, output_padding)
  (y_native, dx_native, dp_native), (y_flax, dx_flax, dp_flax), *results = _values_and_grads(
      [native.apply, reference.apply] + [m.apply for m in rewrites],
      [params, flax_params] + [params] * len(rewrites), x, cotangent)

  assert y_native.shape == y_flax.shape == expected_shape
  _assert_close(y_native, y_flax)
  _assert_close(dx_native, dx_flax)
  _assert_close(dp_native['kernel'], np.asarray(dp_flax['kernel'])[::-1, ::-1])
  _assert_close(dp_native['bias'], dp_flax['bias'])
  for impl, (y, dx, dp) in zip(_REWRITES, results, strict=True):
    assert y.shape == expected_shape, impl
    _assert_close(y, y_native)
    _assert_close(dx, dx_native)
    _assert_close(dp['kernel'], dp_native['kernel'])
    _assert_close(dp['bias'], dp_native['bias'])


@pytest.mark.parametrize('impl', ['fast', 'fast_low_memory'])
def test_fast_runs_scatter_on_cpu(impl):
  x = jnp.zeros((2, 7, 7, 4))
  layer = layers.ConvTranspose(3, 3, 2, 'SAME', impl=impl)
  params = layer.init(_KEY, x)
  # The forward jaxpr: a gradient's inlines the custom_vjp and loses its name.
  jaxpr = str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))
  assert 'name=_col2im' in jaxpr
  assert 'conv_general_dilated' not in jaxpr and 'dot_general' in jaxpr


# (kernel_size, strides, Cin, Cout, output grid or None, the form 'fast' must pick): the Conv
# layers of our configs and the edges of the rule (timings in the comment above
# `layers.fast_conv_form`).
FAST_CONV_FORM_CASES = [
    (3, 1, 32, 1, None, 'shifted'),  # the MNIST decoders' conv to the image
    (3, 1, 32, 1, (28, 28), 'shifted'),
    (3, 1, 32, 3, (64, 64), 'shifted'),  # an RGB one
    (3, 1, 64, 16, (16, 16), 'patches'),  # k*k*Cout > Cin: 'shifted' was 2x slower
    (3, 1, 32, 5, (16, 16), 'patches'),  # above _TAP_MAJOR_MAX_FEATURES
    (3, 1, 32, 1, (2, 2), 'patches'),  # a grid smaller than the kernel: no 'shifted'
    (3, 1, 32, 32, (16, 16), 'patches'),  # ResNet blocks
    (3, 1, 64, 64, (8, 8), 'patches'),
    (3, 1, 32, 32, (32, 32), 'patches'),  # resnet_vae_speckle's
    (3, 1, 256, 256, (2, 2), 'patches'),
    (3, 1, 256, 256, None, 'patches'),
    (3, 2, 1, 32, (32, 32), 'patches'),  # encoders: every strided conv
    (3, 2, 32, 64, (16, 16), 'patches'),  # lfw_conv_ae, lfw_improved_ae
    (3, 2, 32, 64, (7, 7), 'patches'),  # the MNIST encoders'
    (3, 2, 128, 256, (4, 4), 'patches'),
    (4, 2, 3, 32, (32, 32), 'patches'),  # restoration_cifar64_stage1
    (4, 2, 128, 256, (2, 2), 'patches'),
    (4, 2, 256, 512, None, 'patches'),  # SAAAE's last encoder conv
]


# Those that change on CPUs with AVX-512 (native_stride1), where stride-1 convs with k > 1 on
# grids at least k wide run natively.
NATIVE_STRIDE1_FORMS = {
    (3, 1, 64, 16, (16, 16)): 'native',
    (3, 1, 32, 5, (16, 16)): 'native',
    (3, 1, 32, 32, (16, 16)): 'native',
    (3, 1, 64, 64, (8, 8)): 'native',
    (3, 1, 32, 32, (32, 32)): 'native',
}


@pytest.mark.parametrize('k,s,cin,cout,out_size,form', FAST_CONV_FORM_CASES)
def test_fast_conv_picks_the_measured_form(k, s, cin, cout, out_size, form):
  assert layers.fast_conv_form(k, s, cin, cout, out_size) == form
  with_avx512 = NATIVE_STRIDE1_FORMS.get((k, s, cin, cout, out_size), form)
  assert layers.fast_conv_form(k, s, cin, cout, out_size, native_stride1=True) == with_avx512


def test_fast_conv_keeps_1x1_and_unknown_grids_as_patches_even_with_native_stride1():
  assert layers.fast_conv_form(1, 1, 32, 32, (16, 16), native_stride1=True) == 'patches'
  assert layers.fast_conv_form(3, 1, 32, 32, (3, 3), native_stride1=True) == 'native'
  assert layers.fast_conv_form(3, 1, 32, 32, (2, 8), native_stride1=True) == 'patches'


def test_cpu_flags_are_parsed_from_cpuinfo():
  x86 = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n'
  assert cpu_features.parse_cpu_flags(x86) == {'fpu', 'sse2', 'avx2', 'avx512f', 'avx512bw'}
  arm = 'processor\t: 0\nFeatures\t: fp asimd sve\n'
  assert cpu_features.parse_cpu_flags(arm) == {'fp', 'asimd', 'sve'}
  assert cpu_features.parse_cpu_flags('processor\t: 0\n') == frozenset()
  assert cpu_features.parse_cpu_field(x86, 'vendor_id') == 'AuthenticAMD'
  assert cpu_features.parse_cpu_field(arm, 'vendor_id') == ''


@pytest.mark.parametrize('vendor, expected', [('GenuineIntel', 'eigen'),
                                              ('AuthenticAMD', 'ynnpack')])
def test_auto_conv_kernels_follow_the_cpu_vendor(vendor, expected, monkeypatch):
  from conftest import tiny_config

  from jvae import trainer
  monkeypatch.setattr(cpu_features, '_host_cpuinfo', lambda: f'vendor_id\t: {vendor}\n')
  config = tiny_config()
  assert trainer.cpu_conv_kernels(config) == expected
  config.train.cpu_conv_kernels = 'ynnpack'
  assert trainer.cpu_conv_kernels(config) == 'ynnpack'


def test_eigen_conv_kernels_take_convolutions_out_of_ynnpack_and_compute_the_same():
  from conftest import tiny_config

  from jvae import trainer
  # Large enough for XLA to hand the convolutions to YNNPACK at all.
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 32))
  kernel = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, 32, 32))
  grad = jax.grad(lambda x, k: jnp.sum(jnp.tanh(layers.conv_native(x, k, 1, ((1, 1), (1, 1))))),
                  argnums=(0, 1))
  config, results, texts = tiny_config(), {}, {}
  config.train.xla_optimization = 'full'
  for kernels in ('ynnpack', 'eigen'):
    config.train.cpu_conv_kernels = kernels
    compiled = jax.jit(grad, compiler_options=trainer.compiler_options(config)).lower(
        x, kernel).compile()
    results[kernels], texts[kernels] = compiled(x, kernel), compiled.as_text()
  assert 'ynn_fusion' in texts['ynnpack'] and 'ynn_fusion' not in texts['eigen']
  # The same sums in another order: equal to float32 rounding.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5 * float(jnp.max(jnp.abs(a)))),
               results['ynnpack'], results['eigen'])


def test_config_choices_list_every_impl():
  # jvae.bench takes its flag enums from the config, which must not need jax to import.
  assert config.CHOICES['model.conv_impl'] == layers.IMPLS
  assert config.CHOICES['model.conv_transpose_impl'] == layers.CONV_TRANSPOSE_IMPLS


def test_shared_layout_is_never_costlier_than_fused():
  # 'shared' can always choose 'fused''s layout.
  for k, s, padding, output_padding in CONV_TRANSPOSE_CASES + CORNER_CASES:
    for size in (1, 4, 7):
      crop, out = layers.conv_transpose_geometry(size, k, s, padding, output_padding)
      if out < 1:
        continue
      fused_taps = layers._phase_kernel_indices(k, s, crop)[0].shape[1]
      _, window, _, _, grid = layers._shared_plan(k, s, crop, out)
      assert grid * window <= -(-out // s) * fused_taps


_CONV_REWRITES = tuple(impl for impl in layers.IMPLS if impl != 'native')


@pytest.mark.parametrize('padding', ['SAME', 1, 0])
@pytest.mark.parametrize('strides', [1, 2])
@pytest.mark.parametrize('k', [3, 4])
def test_conv_impls_equal_native_and_flax(k, strides, padding):
  x = _normal(30, (2, 7, 8, CIN))
  native = layers.Conv(COUT, k, strides, padding, impl='native')
  rewrites = [native.clone(impl=impl) for impl in _CONV_REWRITES]
  flax_padding = padding if isinstance(padding, str) else ((padding, padding),) * 2
  reference = nn.Conv(COUT, (k, k), (strides, strides), padding=flax_padding)
  params = _random_params(k)
  y_shape = jax.eval_shape(lambda: reference.apply({'params': params}, x)).shape
  cotangent = _normal(31, y_shape)

  (y_native, dx_native, dp_native), (y_flax, dx_flax, dp_flax), *results = _values_and_grads(
      [native.apply, reference.apply] + [m.apply for m in rewrites],
      [params] * (2 + len(rewrites)), x, cotangent)

  _assert_close(y_native, y_flax)
  _assert_close(dx_native, dx_flax)
  for name in ('kernel', 'bias'):
    _assert_close(dp_native[name], dp_flax[name])
  for impl, (y, dx, dp) in zip(_CONV_REWRITES, results, strict=True):
    assert y.shape == y_shape, impl
    _assert_close(y, y_native)
    _assert_close(dx, dx_native)
    for name in ('kernel', 'bias'):
      _assert_close(dp[name], dp_native[name])


@pytest.mark.parametrize('shape', [(2, 5, 6, 7), (3, 7), (7,)])
def test_matmul_rows_equals_dot_with_its_gradients(shape):
  a, b = _normal(50, shape), _normal(51, (7, 4))

  def run(a, b, g):
    y, vjp = jax.vjp(layers.matmul_rows, a, b)
    reference, reference_vjp = jax.vjp(jnp.dot, a, b)
    return (y, reference) + vjp(g) + reference_vjp(g)

  g = _normal(52, shape[:-1] + (4,))
  y, reference, da, db, da_reference, db_reference = _run_jitted(run, a, b, g)
  assert y.shape == shape[:-1] + (4,)
  _assert_close(y, reference)
  _assert_close(da, da_reference)
  _assert_close(db, db_reference)


@pytest.mark.parametrize('window', [3, (1, 2)])
@pytest.mark.parametrize('pads', [((1, 1), (1, 1)), ((0, 2), (2, 0)), ((-1, 2), (1, -2))])
@pytest.mark.parametrize('strides', [1, 2, 3])
def test_extract_patches_custom_vjp_is_exact_transpose(pads, strides, window):
  x = _normal(40, (2, 7, 8, 2))

  def run(x, g):
    # The reference is autodiff's own transpose of the same slices and concat.
    patches, vjp = jax.vjp(lambda x: layers.extract_patches(x, window, strides, pads), x)
    reference, reference_vjp = jax.vjp(
        lambda x: layers._extract_patches_impl(x, window, strides, pads), x)
    return patches, reference, vjp(g)[0], reference_vjp(g)[0]

  out_shape = jax.eval_shape(lambda: layers.extract_patches(x, window, strides, pads)).shape
  g = _normal(41, out_shape)
  patches, reference, dx, dx_reference = _run_jitted(run, x, g)
  _assert_close(patches, reference)
  _assert_close(dx, dx_reference)


@pytest.mark.parametrize('window', [4, (2, 5), (1, 3), 9])
def test_patches_are_the_window_slices_joined_on_the_channel_axis(window):
  # Whatever the stacking does to fuse (9 > 8 taps per row takes the plain stack), the patches
  # are the slices' channel concat, and the tap-major stack is their stack, exactly.
  x = _normal(47, (2, 11, 10, 3))
  pads = ((1, 2), (3, 1))
  slices = layers._patch_slices(x, window, 1, pads)
  np.testing.assert_array_equal(layers.extract_patches(x, window, 1, pads),
                                jnp.concatenate(slices, axis=-1))
  np.testing.assert_array_equal(layers._stack_taps(slices, layers._as_window(window), axis=0),
                                jnp.stack(slices))


@pytest.mark.parametrize('window, pads', [(4, ((1, 2), (1, 2))), (3, ((1, 1), (1, 1))),
                                          ((2, 5), ((0, 1), (2, 2)))])
def test_patch_extraction_writes_the_patch_buffer_without_materialising_its_slices(window, pads):
  x = jnp.ones((8, 8, 8, 16))
  win_h, win_w = layers._as_window(window)
  padded_input = 8 * (8 + sum(pads[0])) * (8 + sum(pads[1])) * 16 * 4
  slices = 8 * 8 * 8 * 16 * 4 * win_h * win_w

  def temp(extract):
    return jax.jit(extract).lower(x).compile().memory_analysis().temp_size_in_bytes

  # A channel concat of the k*k slices keeps each slice as a buffer of its own first.
  assert temp(lambda x: jnp.concatenate(layers._patch_slices(x, window, 1, pads), -1)) > (
      0.8 * slices)
  # The tap stacks write the patches in one loop: the only temporary is the padded input.
  assert temp(lambda x: layers.extract_patches(x, window, 1, pads)) <= padded_input


@pytest.mark.parametrize('window', [3, (1, 2)])
@pytest.mark.parametrize('pads', [((1, 1), (1, 1)), ((0, 2), (2, 0)), ((-1, 2), (1, -2))])
@pytest.mark.parametrize('strides', [1, 2])
def test_lean_patch_matmul_equals_patches_then_matmul_with_its_gradients(pads, strides, window):
  x = _normal(42, (2, 7, 8, 3))
  taps = np.prod(layers._as_window(window))
  weights = _normal(43, (taps * 3, 5))

  def run(x, weights, g):
    outputs = []
    for lean in (True, False):
      y, vjp = jax.vjp(lambda x, w, lean=lean: layers.patch_matmul(x, window, strides, pads, w,
                                                                    lean=lean), x, weights)
      outputs.append((y,) + vjp(g))
    return outputs

  out_shape = jax.eval_shape(
      lambda: layers.patch_matmul(x, window, strides, pads, weights, lean=False)).shape
  (y, dx, dw), (y_ref, dx_ref, dw_ref) = _run_jitted(run, x, weights, _normal(44, out_shape))
  _assert_close(y, y_ref)
  _assert_close(dx, dx_ref)
  _assert_close(dw, dw_ref)


def test_fast_low_memory_runs_lean_patch_matmuls_from_16_input_channels():
  def jaxpr(cin, impl):
    x = jnp.zeros((2, 8, 8, cin))
    layer = layers.Conv(8, 3, 2, 1, impl=impl)
    params = layer.init(_KEY, x)
    return str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(layer.apply(p, x))))(params))

  assert '_lean_patch_matmul' in jaxpr(16, 'fast_low_memory')
  assert '_lean_patch_matmul' not in jaxpr(3, 'fast_low_memory')
  assert '_lean_patch_matmul' not in jaxpr(16, 'fast')


def test_lean_patch_matmul_keeps_no_patch_buffer_for_the_backward_pass():
  # A stack of 3x3 stride-1 patch convs of 32 channels at 16x16: each layer more keeps one more
  # [B, 16, 16, 288] patch buffer for the backward pass unless lean, which keeps its input.
  pads = ((1, 1), (1, 1))
  x = _normal(45, (8, 16, 16, 32))
  patch_buffer = 8 * 16 * 16 * 288 * 4

  def temp(depth, lean):
    def loss(kernels, x):
      h = x
      for kernel in kernels:
        h = jax.nn.relu(layers.patch_matmul(h, 3, 1, pads, kernel, lean=lean))
      return jnp.sum(h ** 2)
    kernels = [_normal(46 + i, (288, 32)) for i in range(depth)]
    return jax.jit(jax.grad(loss)).lower(kernels, x).compile().memory_analysis().temp_size_in_bytes

  kept = {lean: temp(4, lean) - temp(2, lean) for lean in (False, True)}
  assert kept[False] > 1.8 * patch_buffer, kept
  assert kept[True] < 0.5 * patch_buffer, kept


@pytest.mark.parametrize('window', [3, (1, 2)])
@pytest.mark.parametrize('pads', [((1, 1), (1, 1)), ((0, 2), (2, 0)), ((-1, 2), (1, -2))])
@pytest.mark.parametrize('strides', [1, 2])
def test_tap_sum_and_col2im_custom_vjps_are_exact_transposes(pads, strides, window):
  win = (window, window) if isinstance(window, int) else window
  taps = win[0] * win[1]
  x = _normal(42, (2, 7, 8, 2))
  grid = jax.eval_shape(lambda: layers.extract_patches(x, window, strides, pads)).shape[1:3]
  z_read = _normal(43, (taps, 2, 3, 7, 8))
  z_patches = _normal(44, (2,) + grid + (taps * 3,))

  def run(z_read, z_patches):
    # The references are the same sums of slices and pads, left to autodiff.
    read, read_vjp = jax.vjp(lambda z: layers.sum_read_taps(z, window, strides, pads), z_read)
    read_ref, read_ref_vjp = jax.vjp(
        lambda z: layers._sum(layers._read_taps(z, win, strides, pads, grid, tap_axis=True)),
        z_read)
    back, back_vjp = jax.vjp(lambda z: layers.col2im(z, window, strides, pads, (7, 8)), z_patches)
    back_ref, back_ref_vjp = jax.vjp(
        lambda z: layers._col2im_impl(z, win, strides, pads, (7, 8)), z_patches)
    g_read = jnp.asarray(np.random.default_rng(45).normal(size=read.shape), jnp.float32)
    g_back = jnp.asarray(np.random.default_rng(46).normal(size=back.shape), jnp.float32)
    return (read, read_ref, read_vjp(g_read)[0], read_ref_vjp(g_read)[0],
            back, back_ref, back_vjp(g_back)[0], back_ref_vjp(g_back)[0])

  results = _run_jitted(run, z_read, z_patches)
  for actual, expected in zip(results[::2], results[1::2], strict=True):
    _assert_close(actual, expected)


@pytest.mark.parametrize('pads,strides,window', [
    (((1, 0), (2, 1)), 2, 3), (((-1, 2), (1, 1)), 3, 4), (((0, 0), (0, 0)), 1, (1, 2))])
def test_col2im_is_the_transpose_of_extract_patches(pads, strides, window):
  x = _normal(47, (3, 7, 8, 2))
  patches = layers.extract_patches(x, window, strides, pads)
  g = _normal(48, patches.shape)
  # <P x, g> = <x, P^T g>.
  back = layers.col2im(g, window, strides, pads, (7, 8))
  assert back.shape == x.shape
  np.testing.assert_allclose(float(jnp.sum(patches * g)), float(jnp.sum(x * back)), rtol=1e-5)


def test_col2im_rejects_patches_of_another_input():
  z = jnp.zeros((1, 4, 4, 9))
  with pytest.raises(ValueError, match='do not come from an input of size'):
    layers.col2im(z, 3, 2, ((1, 1), (1, 1)), (9, 9))
  with pytest.raises(ValueError, match='k_h\\*k_w\\*C'):
    layers.col2im(jnp.zeros((1, 4, 4, 8)), 3, 2, ((1, 1), (1, 1)), (8, 8))


@pytest.mark.parametrize('impl', sorted(set(layers.CONV_TRANSPOSE_IMPLS) | set(layers.IMPLS)))
def test_shapes_and_parameters(impl):
  x = jnp.zeros((2, 8, 6, CIN))
  conv_impl = impl if impl in layers.IMPLS else 'fast'
  transpose_impl = impl if impl in layers.CONV_TRANSPOSE_IMPLS else 'fast'
  cases = [
      # (module, expected output shape)
      (layers.ConvTranspose(COUT, 4, 2, 1, impl=transpose_impl), (2, 16, 12, COUT)),
      (layers.ConvTranspose(COUT, 3, 2, 1, 1, impl=transpose_impl), (2, 16, 12, COUT)),
      (layers.ConvTranspose(COUT, 3, 2, 1, impl=transpose_impl), (2, 15, 11, COUT)),
      (layers.ConvTranspose(COUT, 3, 2, 'SAME', impl=transpose_impl), (2, 16, 12, COUT)),
      (layers.ConvTranspose(COUT, 3, 1, 'SAME', impl=transpose_impl), (2, 8, 6, COUT)),
      (layers.ConvTranspose(COUT, 3, 2, 'VALID', impl=transpose_impl), (2, 17, 13, COUT)),
      (layers.Conv(COUT, 3, 1, 'SAME', impl=conv_impl), (2, 8, 6, COUT)),
      (layers.Conv(COUT, 3, 2, 'SAME', impl=conv_impl), (2, 4, 3, COUT)),
      (layers.Conv(COUT, 3, 2, 1, impl=conv_impl), (2, 4, 3, COUT)),
      (layers.Conv(COUT, 4, 2, 1, impl=conv_impl), (2, 4, 3, COUT)),
      (layers.Conv(COUT, 3, 2, 0, impl=conv_impl), (2, 3, 2, COUT)),
  ]
  for module, expected in cases:
    variables = jax.eval_shape(module.init, _KEY, x)
    k = module.kernel_size
    assert variables['params']['kernel'].shape == (k, k, CIN, COUT)
    assert variables['params']['kernel'].dtype == jnp.float32
    assert variables['params']['bias'].shape == (COUT,)
    assert jax.eval_shape(module.apply, variables, x).shape == expected, module


def test_all_impls_have_identical_parameter_trees():
  x = jnp.ones((2, 5, 5, CIN))
  for module, impls in ((layers.Conv(COUT, 3, 2), layers.IMPLS),
                        (layers.ConvTranspose(COUT, 4, 2, 1), layers.CONV_TRANSPOSE_IMPLS)):
    native = jax.eval_shape(module.clone(impl='native').init, _KEY, x)
    for impl in impls:
      assert jax.eval_shape(module.clone(impl=impl).init, _KEY, x) == native, impl


def test_leading_batch_axes_and_unbatched_inputs():
  x = _normal(50, (3, 2, 5, 6, CIN))
  params = {'params': _random_params(3)}
  for module in (layers.Conv(COUT, 3, 2, impl='fast'), layers.ConvTranspose(COUT, 3, 2, 1, 1)):
    y, y_single = _run_jitted(lambda p, x, m=module: (m.apply(p, x), m.apply(p, x[1, 0])),
                              params, x)
    assert y.shape[:2] == (3, 2)
    _assert_close(np.asarray(y)[1, 0], y_single)


@pytest.mark.parametrize('impl', layers.CONV_TRANSPOSE_IMPLS)
def test_bfloat16_compute(impl):
  x = _normal(60, (2, 6, 6, CIN))
  module = layers.ConvTranspose(COUT, 4, 2, 1, impl=impl, dtype=jnp.bfloat16)
  variables = jax.eval_shape(module.init, _KEY, x)
  assert variables['params']['kernel'].dtype == jnp.float32
  params = {'params': _random_params(4)}
  module32 = module.clone(dtype=jnp.float32)
  y, y32 = _run_jitted(lambda p, x: (module.apply(p, x), module32.apply(p, x)), params, x)
  assert y.dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: relative error ~ 2^-8 per term.
  _assert_close(np.asarray(y, np.float32), y32, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize('module,match', [
    (layers.ConvTranspose(COUT, 3, 2, 'SAME', output_padding=1), 'output_padding needs an int'),
    (layers.ConvTranspose(COUT, 3, 2, 1, output_padding=2), 'must be < strides'),
    (layers.ConvTranspose(COUT, 3, 2, -1), 'padding'),
    (layers.ConvTranspose(COUT, 3, 2, 'CIRCULAR'), 'padding'),
    (layers.ConvTranspose(COUT, 3, 2, 1, impl='lax'), 'impl'),
    (layers.ConvTranspose(COUT, 3, 1, 5), 'empty output'),
    (layers.Conv(COUT, 0), 'kernel_size'),
    (layers.Conv(COUT, 3, impl='im2col'), 'impl'),
    (layers.Conv(COUT, 3, impl='phases'), 'impl'),  # a ConvTranspose form only
    (layers.ConvTranspose(COUT, 3, 2, 1, impl='shifted'), 'impl'),  # a Conv form only
    (layers.Conv(COUT, 9, padding='VALID'), 'larger than the padded input'),
])
def test_unsupported_settings_raise(module, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(module.init, _KEY, jnp.zeros((1, 4, 4, CIN)))


def test_fast_runs_the_native_ops_off_the_cpu(monkeypatch):
  x = _normal(0, (2, 6, 6, 3))
  kernel = _normal(1, (3, 3, 3, 2))

  def primitives(fn):
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(x, kernel).eqns}

  def conv(x, k):
    return layers.conv_fast(x, k, 2, ((1, 1), (1, 1)))

  def transpose(x, k):
    return layers.conv_transpose_fast(x, k, 2, (1, 1), (11, 11))

  # On CPU 'fast' picks a rewrite for this transposed conv (no lax convolution in it); off the
  # CPU both layers must be the native lax convolution. Fresh wrappers after the patch: JAX
  # caches traces per function.
  assert 'conv_general_dilated' not in primitives(transpose)
  monkeypatch.setattr(layers.jax, 'default_backend', lambda: 'gpu')
  assert 'conv_general_dilated' in primitives(lambda x, k: conv(x, k))
  assert 'conv_general_dilated' in primitives(lambda x, k: transpose(x, k))


def test_stride1_convs_run_natively_on_avx512_or_by_choice_and_need_less_step_memory():
  # A ResNet block's two 3x3 stride-1 convs at 16x16 with 32 channels, as in
  # resnet_vae_fashion_mnist, trained for one gradient: 'fast_patches' runs them as patches and
  # keeps the patch buffers and their gradients; 'fast_low_memory' runs them natively; 'fast'
  # does what the CPU's rule says. On a 2x2 grid (smaller than the kernel) all keep 'patches',
  # where the native op is pathologically slow.
  x = _normal(40, (8, 16, 16, 32))

  def block(impl):
    conv = layers.Conv(32, 3, 1, 'SAME', impl=impl)
    params = conv.init(_KEY, x)

    def loss(params, x):
      h = jax.nn.relu(conv.apply(params, x))
      return jnp.sum(conv.apply(params, h) ** 2)
    return params, jax.jit(jax.grad(loss, argnums=(0, 1)))

  def runs_native(params, step):
    return 'conv_general_dilated' in str(jax.make_jaxpr(step)(params, x))

  temp, grads = {}, {}
  for impl in ('fast_patches', 'fast_low_memory'):
    params, step = block(impl)
    assert runs_native(params, step) == (impl == 'fast_low_memory'), impl
    temp[impl] = step.lower(params, x).compile().memory_analysis().temp_size_in_bytes
    grads[impl] = step(params, x)
  assert temp['fast_low_memory'] < 0.75 * temp['fast_patches'], temp
  for a, b in zip(jax.tree.leaves(grads['fast_patches']),
                  jax.tree.leaves(grads['fast_low_memory']), strict=True):
    _assert_close(a, b)
  for avx512 in (False, True):
    with mock.patch.object(cpu_features, 'host_has_avx512', return_value=avx512):
      assert runs_native(*block('fast')) == avx512, avx512
  tiny = jnp.zeros((2, 2, 2, 32))
  kernel = jnp.zeros((3, 3, 32, 32))
  pads = ((1, 1), (1, 1))
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(
      lambda x, k: layers.conv_fast_low_memory(x, k, 1, pads))(tiny, kernel))
  # Nor a 1x1 conv, whose patches are its input.
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(
      lambda x, k: layers.conv_fast_low_memory(x, k, 1, ((0, 0), (0, 0))))(
          x, jnp.zeros((1, 1, 32, 32))))


def test_fast_conv_on_a_grid_smaller_than_the_kernel_runs_patches_and_equals_native():
  # 3x3 SAME at stride 1 to one channel: 'shifted' on a large grid, but on a 2x2 one conv_fast
  # must derive the output grid from the input and the pads and run 'patches'.
  x = _normal(2, (2, 2, 2, 16))
  kernel = _normal(3, (3, 3, 16, 1))
  pads = ((1, 1), (1, 1))
  assert layers.fast_conv_form(3, 1, 16, 1, (16, 16)) == 'shifted'
  with mock.patch.object(layers, 'conv_patches', wraps=layers.conv_patches) as patches, \
       mock.patch.object(layers, 'conv_shifted', wraps=layers.conv_shifted) as shifted, \
       mock.patch.dict(layers._CONV_FORMS, {'patches': layers.conv_patches,
                                            'shifted': layers.conv_shifted}):
    primitives = {eqn.primitive.name for eqn in jax.make_jaxpr(
        lambda x, k: layers.conv_fast(x, k, 1, pads))(x, kernel).eqns}
  assert patches.call_count == 1 and shifted.call_count == 0
  assert 'conv_general_dilated' not in primitives
  y_fast, y_native = _run_jitted(
      lambda x, k: (layers.conv_fast(x, k, 1, pads), layers.conv_native(x, k, 1, pads)),
      x, kernel)
  _assert_close(y_fast, y_native)


@pytest.mark.parametrize('batch,points,expected', [
    (64, 256, 4),    # resnet_vae_fashion_mnist's 16 px blocks: 4 chunks of 16 examples
    (64, 1024, 8),   # speckle's 32 px blocks: 8 examples (8192 points) is the floor
    (64, 64, 1),     # 8 px: one piece already holds 4096 points
    (16, 1024, 2),
    (12, 1024, 1),   # no divisor of 12 leaves chunks of 8 or more examples but 1
    (1, 10**6, 1),
])
def test_weight_grad_chunks_rule(batch, points, expected):
  chunks = layers.weight_grad_chunks(batch, points)
  assert chunks == expected
  assert batch % chunks == 0


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('strides,pads,chunks', [
    (1, ((1, 1), (1, 1)), 3),  # 7x8 = 56 points per example: the floor of 2 examples decides
    (2, ((0, 1), (1, 0)), 2),  # 3x4 = 12 points: 3 examples (36 points) fit under 60
])
def test_chunked_weight_gradient_equals_the_native_convolution(strides, pads, chunks, dtype):
  x = _normal(60, (6, 7, 8, CIN)).astype(dtype)
  kernel = _normal(61, (3, 3, CIN, COUT)).astype(dtype)
  out_points = int(np.prod([layers.conv_output_length(n, 3, strides, p)
                            for n, p in zip(x.shape[1:3], pads, strict=True)]))
  # At most 60 points and at least 2 examples per chunk.
  assert layers.weight_grad_chunks(6, out_points, 60, 2) == chunks

  def chunked(x, k):
    return layers.conv_native_chunked(x, k, strides, pads, max_points=60, min_examples=2)

  def native(x, k):
    return layers.conv_native(x, k, strides, pads)

  assert 'custom_vjp_call' in str(jax.make_jaxpr(chunked)(x, kernel))
  cotangent = _normal(62, jax.eval_shape(native, x, kernel).shape).astype(dtype)

  def values_and_grads(conv):
    y, vjp = jax.vjp(conv, x, kernel)
    return (y, *vjp(cotangent))

  results, reference = jax.jit(lambda: (values_and_grads(chunked), values_and_grads(native)))()
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for got, want in zip(results, reference, strict=True):
    assert got.dtype == want.dtype == dtype
    _assert_close(got.astype(jnp.float32), want.astype(jnp.float32), tolerance, tolerance)


def test_fast_sums_native_weight_gradients_over_batch_chunks_on_avx512():
  # 32 examples of 16x16: 8192 output points, so 'fast' on an AVX-512 CPU sums the native weight
  # gradient over 2 chunks of 16 examples, and equals the plain native convolution.
  x = _normal(63, (32, 16, 16, 2))
  kernel = _normal(64, (3, 3, 2, 3))
  pads = ((1, 1), (1, 1))
  assert layers.weight_grad_chunks(32, 16 * 16) == 2

  def fast_loss(x, k):
    return jnp.sum(jnp.sin(layers.conv_fast(x, k, 1, pads)))

  with mock.patch.object(cpu_features, 'host_has_avx512', return_value=True):
    jaxpr = str(jax.make_jaxpr(fast_loss)(x, kernel))
    assert 'conv_general_dilated' in jaxpr and 'custom_vjp_call' in jaxpr
    fast_grads = jax.jit(jax.grad(fast_loss, (0, 1)))(x, kernel)
  native_grads = jax.jit(jax.grad(
      lambda x, k: jnp.sum(jnp.sin(layers.conv_native(x, k, 1, pads))), (0, 1)))(x, kernel)
  for got, want in zip(fast_grads, native_grads, strict=True):
    _assert_close(got, want)
