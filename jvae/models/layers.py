"""2D convolution layers with a choice between native XLA convolutions and exact matmul rewrites.

Both layers take and return NHWC arrays ([B, H, W, C]; any number of leading batch axes, or none,
is accepted) and own the same parameters whatever `impl` is: 'kernel' of shape
[k, k, C_in, C_out] and 'bias' of shape [C_out]. Switching `impl` therefore changes only speed,
never the function or a checkpoint.

XLA:CPU runs convolutions through its own Eigen kernels but matmuls through fast GEMM libraries
(see PERF_NOTES.md), so the rewrites turn each layer into matmuls plus data movement; which
wins depends on the layer. `Conv` offers:

- impl='native' uses `lax.conv_general_dilated`, the form XLA knows best on GPU and TPU.
- impl='patches' is patch extraction (k*k strided slices and one concat) followed by a single
  matmul. The patch extraction carries a `jax.custom_vjp` whose backward is its exact
  transpose, a sum of dilated, shifted copies of the cotangent, because autodiff's own transpose
  of the concat of slices is much slower.
- impl='shifted' is one matmul from Cin to every tap's partial output (k*k*Cout channels), then
  the sum of those read at their taps' offsets: a small buffer where Cout is small.
- impl='fast' runs 'shifted' where that is cheap and 'patches' elsewhere on CPU, but the
  native op for stride-1 convs on CPUs with AVX-512, by a rule fitted to train-step timings
  (`fast_conv_form`), and 'native' on other backends. Its native convs on CPU sum their weight
  gradient over batch chunks (`conv_native_chunked`), which XLA:CPU computes faster than the
  whole batch's. 'fast_low_memory' and 'fast_patches' are
  'fast' with the stride-1 choice fixed to native or to 'patches' on any CPU; 'fast_low_memory'
  also runs its patch matmuls lean (`patch_matmul`): their backward pass keeps the layer's input
  instead of the patch buffer and forms the weight gradient tap by tap.

`ConvTranspose` has PyTorch's ConvTranspose2d ("scatter") semantics,

  y[s*i + t - p] += x[i] * kernel[t]   (per spatial axis),

and its rewrites work from the undilated input. This avoids both the input dilation, which
wastes (s*s - 1)/(s*s) of the work on zeros, and the weight gradient of an input-dilated
convolution, the slowest op on XLA:CPU. The phase forms compute the s*s output phases (o mod s),
each a stride-1 convolution run as patches and a matmul, and interleave them (depth-to-space);
they differ in how the phases share work:

- 'fused': one patch buffer over the union of all phases' taps and one matmul with s*s*C_out
  columns. Phases with fewer taps multiply zeros: 9/4 of the needed work at k=4, s=2, p=1 and
  16/9 at k=3, s=2.
- 'phases': each phase extracts only its own taps and runs its own matmul: no zero taps, but
  s*s patch buffers that together hold k*k*C_in values per output grid point.
- 'shared': one buffer and one matmul like 'fused', on a grid shifted so that every phase's taps
  fit the smallest window (ceil(k/s) taps per axis at k=4, s=2, for one extra grid row and
  column). 'fused' is one of the layouts it chooses from.
- 'scatter': no phases: one matmul from Cin to every tap's contribution (k*k*Cout channels),
  then their scatter-add into the output (`col2im`, the exact transpose of patch extraction,
  one loop per output phase; its backward is patch extraction). Only real taps are multiplied,
  in one matmul with k*k*Cout columns, and its gradients need only the matmul's operands (XLA
  may still keep the output's summands, to recompute the output where the next activation's
  gradient reads it).
- 'fast': 'scatter' on CPU, where it beat every phase form in every train step we measured
  (`conv_transpose_fast`), and 'native' on other backends; 'fast_low_memory' is the same
  ('scatter' keeps no patch buffer to trade for speed).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.models import cpu_features

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

IMPLS = ('native', 'fast', 'fast_low_memory', 'fast_patches', 'patches', 'shifted')
CONV_TRANSPOSE_IMPLS = ('native', 'fast', 'fast_low_memory', 'fused', 'phases', 'shared',
                        'scatter')
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def _check_layer_args(
    name: str, features: int, kernel_size: int, strides: int, padding: int | str, impl: str,
    impls: tuple[str, ...] = IMPLS) -> None:
  """Raises ValueError for settings neither impl supports."""
  for field, value in (('features', features), ('kernel_size', kernel_size),
                       ('strides', strides)):
    # bool is an int subclass; True as a kernel size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f'{name}.{field} must be an int >= 1, got {value!r}')
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(f"{name}.padding must be 'SAME', 'VALID' or an int >= 0, got {padding!r}")
  elif isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
    raise ValueError(f"{name}.padding must be 'SAME', 'VALID' or an int >= 0, got {padding!r}")
  if impl not in impls:
    raise ValueError(f'{name}.impl must be one of {impls}, got {impl!r}')


def _as_nhwc(x: Array, name: str) -> tuple[Array, tuple[int, ...]]:
  """Flattens leading batch axes to one; returns the array and the batch shape to restore."""
  if x.ndim < 3:
    raise ValueError(f'{name} expects inputs shaped [..., H, W, C], got shape {x.shape}')
  batch_shape = x.shape[:-3]
  return x.reshape((-1,) + x.shape[-3:]), batch_shape


def conv_output_padding(size: int, kernel_size: int, strides: int,
                        padding: int | str) -> tuple[int, int]:
  """Padding (lo, hi) of one spatial axis of a forward convolution.

  Args:
    size: input length of the axis.
    kernel_size: kernel length k.
    strides: stride s.
    padding: 'SAME' (flax/TensorFlow: output ceil(size / s), extra padding at the end),
      'VALID' (none), or an int p (PyTorch: p on both sides).

  Returns:
    (lo, hi) zero padding to apply before and after the axis.
  """
  if padding == 'SAME':
    out = -(-size // strides)
    total = max((out - 1) * strides + kernel_size - size, 0)
    return total // 2, total - total // 2
  if padding == 'VALID':
    return 0, 0
  return int(padding), int(padding)


def conv_transpose_geometry(size: int, kernel_size: int, strides: int, padding: int | str,
                            output_padding: int = 0) -> tuple[int, int]:
  """Crop and output length of one spatial axis of a transposed convolution.

  The full scatter result y_full[s*i + t] += x[i] * w[t] has length (size - 1)*s + k; the layer
  returns y[o] = y_full[o + crop_lo] for 0 <= o < out_size, zero where o + crop_lo runs past the
  end of y_full (only possible for 'SAME'/'VALID' with k < s).

  Args:
    size: input length of the axis.
    kernel_size: kernel length k.
    strides: stride s.
    padding: 'SAME' (output s*size, crop (k - s)//2 at the start; TensorFlow/Keras and flax),
      'VALID' (flax: output s*size + max(k - s, 0), no crop at the start), or an int p
      (PyTorch: output (size - 1)*s - 2p + k + output_padding, crop p at the start).
    output_padding: extra output length at the end; int padding only, 0 <= output_padding < s.

  Returns:
    (crop_lo, out_size).
  """
  k, s = kernel_size, strides
  if padding == 'SAME':
    return max(k - s, 0) // 2, size * s
  if padding == 'VALID':
    return 0, size * s + max(k - s, 0)
  p = int(padding)
  return p, (size - 1) * s - 2 * p + k + output_padding


# Patch extraction and its transpose. Shared by Conv (window k x k, stride s) and by the phase
# convolutions inside ConvTranspose (windows of each phase's taps, stride 1).

Window = tuple[int, int]


def _as_window(window: int | Window) -> Window:
  """A square side k or a (k_h, k_w) pair, as a (k_h, k_w) pair of ints."""
  win = (window, window) if isinstance(window, (int, np.integer)) else tuple(window)
  return int(win[0]), int(win[1])


def conv_output_length(in_size: int, window: int, strides: int, pads: tuple[int, int]) -> int:
  """Output length of one spatial axis of a forward convolution (or of patch extraction) with
  padding `pads` = (lo, hi), e.g. from `conv_output_padding`."""
  return (in_size + pads[0] + pads[1] - window) // strides + 1


def _patch_slices(x: Array, window: int | Window, strides: int,
                  pads: tuple[tuple[int, int], tuple[int, int]]) -> list[Array]:
  """Per window offset (i, j), row-major: the [B, Ho, Wo, C] inputs that offset reads."""
  (lo_h, hi_h), (lo_w, hi_w) = pads
  win_h, win_w = _as_window(window)
  b, h, w, c = x.shape
  # lax.pad accepts negative amounts, which crop; the transposed conv needs that.
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
  ho = conv_output_length(h, win_h, strides, pads[0])
  wo = conv_output_length(w, win_w, strides, pads[1])
  return [
      lax.slice(xp, (0, i, j, 0),
                (b, i + strides * (ho - 1) + 1, j + strides * (wo - 1) + 1, c),
                (1, strides, strides, 1))
      for i in range(win_h) for j in range(win_w)
  ]


# XLA:CPU fuses a concatenate into the loop that computes its operands only if it has at most
# this many operands (xla/service/cpu/cpu_instruction_fusion.cc, kMaxConcatenateArguments);
# otherwise it computes every operand into a buffer of its own and copies them into the result.
# (That file's newer versions also refuse large concats along the minor axis; jaxlib 0.10.2's
# XLA fused a channel concat of 4 or 6 slices.)
_MAX_FUSED_CONCAT_OPERANDS = 8


def _stack_taps(taps: list[Array], window: Window, axis: int) -> Array:
  """Per-tap arrays (row-major window offsets) stacked on a new axis of length k_h*k_w at `axis`.

  Built as a k_w-way stack per window row, then a k_h-way stack of the rows, merged by a reshape:
  each stack has at most 8 operands, on axes of its own ahead of the channels, so XLA:CPU writes
  the result in one fused loop straight from the taps' sources. A channel concat of the k*k
  patch slices instead kept every slice as a buffer first (twice the patch buffer at the peak).
  In a scratch A/B of the train steps on a 2-core AMD EPYC with AVX2 (2026-12-04; ms / XLA
  temporaries MB, 15 rounds): mnist_cvae_onehot 137.8 / 78.2 -> 134.2 / 64.1, mnist_dvae
  133.3 / 85.1 -> 130.6 / 71.1, lfw_conv_ae 207.3 / 93.7 -> 201.7 / 86.4,
  restoration_cifar64_stage1 259.1 / 88.0 -> 252.7 / 85.4, saaae_cifar64_patch_anchor (6
  rounds) 1581.5 / 335.0 -> 1531.5 / 289.0 (BENCHMARKS.md, seventeenth session).
  """
  win_h, win_w = window
  if max(window) > _MAX_FUSED_CONCAT_OPERANDS:
    return jnp.stack(taps, axis)
  rows = [jnp.stack(taps[i * win_w:(i + 1) * win_w], axis) for i in range(win_h)]
  grid = jnp.stack(rows, axis)
  return grid.reshape(*grid.shape[:axis], win_h * win_w, *grid.shape[axis + 2:])


def _extract_patches_impl(x: Array, window: int | Window, strides: int,
                          pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  slices = _patch_slices(x, window, strides, pads)
  if len(slices) == 1:
    return slices[0]
  patches = _stack_taps(slices, _as_window(window), axis=3)  # [B, Ho, Wo, k_h*k_w, C]
  return patches.reshape(*patches.shape[:3], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _extract_patches(x: Array, window: Window, strides: int,
                     pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  return _extract_patches_impl(x, window, strides, pads)


def _extract_patches_fwd(x, window, strides, pads):
  # Only the input shape is needed backward; a zero-size array carries it without a copy of x.
  return _extract_patches_impl(x, window, strides, pads), jnp.zeros(x.shape[1:3] + (0,), x.dtype)


def _extract_patches_bwd(window, strides, pads, shape_carrier, g):
  return (_col2im_impl(g, window, strides, pads, shape_carrier.shape[:2]),)


def _col2im_impl(g: Array, window: Window, strides: int,
                 pads: tuple[tuple[int, int], tuple[int, int]], hw: tuple[int, int]) -> Array:
  h, w = hw
  win_h, win_w = window
  c = g.shape[-1] // (win_h * win_w)
  ho, wo = g.shape[1:3]
  zero = jnp.zeros((), g.dtype)

  def patch(i, j):
    n = i * win_w + j
    return g[..., n * c:(n + 1) * c]

  # x row s*q + r is read only by the patches i = (r + lo) mod s + s*t, at patch row q + d - t.
  # Each of the s*s output phases (one at stride 1) is then a sum of plain shifted copies, and
  # the phases interleave by depth-to-space; the pads and their sum fuse into one loop per phase,
  # unlike autodiff's transpose of the concat-of-slices. Scattering each patch back with a
  # dilating pad instead made every element of dx evaluate all k*k pads, most of them to zero
  # at stride 2 (11 ms for the input gradient of the restoration encoder's 32 px, 32 -> 64
  # channel conv at B 32, in a ~230 ms step).
  s = strides
  grid = (-(-h // s), -(-w // s))

  def taps(r, lo, window):
    first = (r + lo) % s
    d = (r + lo - first) // s
    return [(first + s * t, d - t) for t in range(-(-(window - first) // s))]

  phases = []
  for r_h in range(s):
    row = []
    for r_w in range(s):
      phase = None
      for i, off_h in taps(r_h, pads[0][0], win_h):
        for j, off_w in taps(r_w, pads[1][0], win_w):
          # Phase row q reads patch row q + off: a pad by -off (negative crops) to grid rows.
          contrib = lax.pad(patch(i, j), zero, (
              (0, 0, 0), (-off_h, grid[0] - ho + off_h, 0), (-off_w, grid[1] - wo + off_w, 0),
              (0, 0, 0)))
          phase = contrib if phase is None else phase + contrib
      row.append(jnp.zeros((g.shape[0], *grid, c), g.dtype) if phase is None else phase)
    phases.append(row)
  return _interleave_phases(phases, (h, w))


_extract_patches.defvjp(_extract_patches_fwd, _extract_patches_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _col2im(z: Array, window: Window, strides: int,
            pads: tuple[tuple[int, int], tuple[int, int]], hw: tuple[int, int]) -> Array:
  return _col2im_impl(z, window, strides, pads, hw)


def _col2im_fwd(z, window, strides, pads, hw):
  return _col2im_impl(z, window, strides, pads, hw), None


def _col2im_bwd(window, strides, pads, hw, _, g):
  # Autodiff's transpose of the pads and sums would pad every patch's cotangent to the whole
  # input grid; patch extraction is the same numbers as k*k strided slices and one concat.
  return (_extract_patches_impl(g, window, strides, pads),)


_col2im.defvjp(_col2im_fwd, _col2im_bwd)


def col2im(z: Array, window: int | Window, strides: int,
           pads: tuple[tuple[int, int], tuple[int, int]], hw: tuple[int, int]) -> Array:
  """The transpose of `extract_patches`: adds every patch back where it was read from.

  x[s*m + (i, j) - lo] += z[m, (i*k_w + j)*C : (i*k_w + j + 1)*C] for each patch grid point m and
  window offset (i, j); reads beyond the input (its padding) are dropped.

  Args:
    z: [B, Ho, Wo, k_h*k_w*C], laid out as `extract_patches` returns its patches.
    window, strides, pads: those of the patch extraction being transposed.
    hw: (H, W) of the array the patches were (notionally) read from.

  Returns:
    [B, H, W, C].
  """
  win, strides, pads = _patch_args((z.shape[0], *hw, 1), window, strides, pads)
  if z.ndim != 4 or z.shape[-1] % (win[0] * win[1]):
    raise ValueError(f'col2im expects [B, Ho, Wo, k_h*k_w*C] for window {window}, got shape '
                     f'{z.shape}')
  grid = tuple(conv_output_length(size, k, strides, pad)
               for size, k, pad in zip(hw, win, pads, strict=True))
  if tuple(z.shape[1:3]) != grid:
    raise ValueError(f'{tuple(z.shape[1:3])} patches of window {window}, stride {strides} and '
                     f'pads {pads} do not come from an input of size {tuple(hw)}')
  return _col2im(z, win, strides, pads, (int(hw[0]), int(hw[1])))


def extract_patches(x: Array, window: int | Window, strides: int,
                    pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  """Im2col: all window patches of x, stacked on the channel axis.

  Args:
    x: [B, H, W, C].
    window: patch side k, or (k_h, k_w) for a rectangular patch.
    strides: step between patches.
    pads: ((lo_h, hi_h), (lo_w, hi_w)) zero padding of H and W; negative amounts crop.

  Returns:
    [B, Ho, Wo, k_h*k_w*C] with Ho = (H + lo_h + hi_h - k_h)//strides + 1 (Wo alike), channel
    index (i*k_w + j)*C + c for patch offset (i, j), so that a dot with a kernel [k_h, k_w, C, F]
    reshaped to [k_h*k_w*C, F] is the convolution.
  """
  return _extract_patches(x, *_patch_args(x.shape, window, strides, pads))


def _patch_args(shape: tuple[int, ...], window: int | Window, strides: int,
                pads) -> tuple[Window, int, tuple[tuple[int, int], tuple[int, int]]]:
  """(window, strides, pads) normalised for `_extract_patches`, after checking they fit."""
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  win = _as_window(window)
  if len(shape) != 4:
    raise ValueError(f'extract_patches expects [B, H, W, C], got shape {shape}')
  if min(win) < 1:
    raise ValueError(f'extract_patches needs a window >= 1, got {window}')
  if (conv_output_length(shape[1], win[0], strides, pads[0]) < 1
      or conv_output_length(shape[2], win[1], strides, pads[1]) < 1):
    raise ValueError(f'window {window} does not fit input {tuple(shape[1:3])} padded by {pads}')
  return win, int(strides), pads


# Tap-major forms: one matmul gives every kernel tap's partial result, [T, C, B, H, W] with
# T = k*k taps, and the convolution is their sum, each tap read (Conv) or written (ConvTranspose)
# at its own offset. Spatial axes last keep each tap's strided slice or dilating pad contiguous; in
# NHWC with only k*k*C channels (C = 1 or 3) the same slices pick a few channels out of each
# pixel and ran ~1.5x slower.


def _read_taps(a: Array, window: Window, strides: int,
               pads: tuple[tuple[int, int], tuple[int, int]], grid: tuple[int, int],
               tap_axis: bool) -> list[Array]:
  """Per tap (i, j): a, zero padded on its last two axes, read at rows i + s*m, m < grid.

  With `tap_axis`, a is [T, ...] and tap n reads only a[n]; otherwise every tap reads all of a.
  """
  (lo_h, hi_h), (lo_w, hi_w) = pads
  win_h, win_w = window
  lead = a.shape[:-2]
  ap = lax.pad(a, jnp.zeros((), a.dtype),
               ((0, 0, 0),) * len(lead) + ((lo_h, hi_h, 0), (lo_w, hi_w, 0)))
  taps = []
  for i in range(win_h):
    for j in range(win_w):
      start = (0,) * len(lead) + (i, j)
      limit = lead + (i + strides * (grid[0] - 1) + 1, j + strides * (grid[1] - 1) + 1)
      if tap_axis:
        n = i * win_w + j
        start, limit = (n,) + start[1:], (n + 1,) + limit[1:]
      tap = lax.slice(ap, start, limit, (1,) * len(lead) + (strides, strides))
      taps.append(tap[0] if tap_axis else tap)
  return taps


def _write_taps(g: Array, window: Window, strides: int,
                pads: tuple[tuple[int, int], tuple[int, int]], hw: tuple[int, int]) -> list[Array]:
  """The transpose of `_read_taps` tap by tap: g moved to where tap (i, j) read it.

  Each is [..., H, W] with hw = (H, W): tap (i, j) read rows i - lo + s*m, and one dilating pad
  puts g[..., m, :] there.
  """
  h, w = hw
  win_h, win_w = window
  grid = g.shape[-2:]
  zero = jnp.zeros((), g.dtype)
  pieces = []
  for i in range(win_h):
    for j in range(win_w):
      row0 = i - pads[0][0]
      col0 = j - pads[1][0]
      pieces.append(lax.pad(g, zero, ((0, 0, 0),) * (g.ndim - 2) + (
          (row0, h - row0 - (strides * (grid[0] - 1) + 1), strides - 1),
          (col0, w - col0 - (strides * (grid[1] - 1) + 1), strides - 1))))
  return pieces


def _sum(arrays: list[Array]) -> Array:
  # One chain of adds, which XLA fuses with the pads or slices into a single loop.
  return functools.reduce(jnp.add, arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _sum_read_taps(z: Array, window: Window, strides: int,
                   pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  grid = tuple(conv_output_length(n, w, strides, p)
               for n, w, p in zip(z.shape[-2:], window, pads, strict=True))
  return _sum(_read_taps(z, window, strides, pads, grid, tap_axis=True))


def _sum_read_taps_fwd(z, window, strides, pads):
  return _sum_read_taps(z, window, strides, pads), jnp.zeros(z.shape[-2:] + (0,), z.dtype)


def _sum_read_taps_bwd(window, strides, pads, shape_carrier, g):
  # Autodiff would pad every tap's slice to the whole [T, ...] array and sum those.
  return (_stack_taps(_write_taps(g, window, strides, pads, shape_carrier.shape[:2]), window,
                      axis=0),)


_sum_read_taps.defvjp(_sum_read_taps_fwd, _sum_read_taps_bwd)


def _check_taps(name: str, z: Array, window: int | Window, pads) -> tuple[Window, tuple]:
  win = _as_window(window)
  if min(win) < 1:
    raise ValueError(f'{name} needs a window >= 1, got {window}')
  if z.ndim < 3 or z.shape[0] != win[0] * win[1]:
    raise ValueError(f'{name} expects [k_h*k_w, ..., H, W] for window {window}, got shape '
                     f'{z.shape}')
  return win, tuple((int(lo), int(hi)) for lo, hi in pads)


def sum_read_taps(z: Array, window: int | Window, strides: int,
                  pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  """The sum over taps (i, j) of z[i*k_w + j] read as patch offset (i, j) reads its input.

  y[..., m] = sum_(i, j) z_pad[i*k_w + j, ..., s*m + (i, j)]: with z[t] = x @ kernel[t] this is
  the convolution of x, from per-tap partial outputs instead of input patches.

  Args:
    z: [k_h*k_w, ..., H, W].
    window, strides, pads: as for `extract_patches` (pads of the last two axes).

  Returns:
    [..., Ho, Wo], the sizes `extract_patches` gives.
  """
  win, pads = _check_taps('sum_read_taps', z, window, pads)
  for size, w, pad in zip(z.shape[-2:], win, pads, strict=True):
    if conv_output_length(size, w, strides, pad) < 1:
      raise ValueError(f'window {window} does not fit input {z.shape[-2:]} padded by {pads}')
  return _sum_read_taps(z, win, int(strides), pads)


def _phase_kernel_indices(kernel_size: int, strides: int, crop_lo: int) -> tuple[np.ndarray, int]:
  """Static gather table for the phase decomposition of one spatial axis.

  Output o = s*m + r reads y_full[s*m + r + crop_lo] = sum_d x[m - d] * w[r + crop_lo + s*d]
  over the d with 0 <= r + crop_lo + s*d < k. Every phase shares one tap range
  d_min..d_max, so the phases become output channels of a single stride-1 convolution with
  T = d_max - d_min + 1 taps; a phase with fewer taps gets zeros.

  Returns:
    (idx, d_max): idx[r, j] is the kernel row used by phase r at window offset j (so window offset
    j reads x[m + j - d_max]), or k, a zero row, where phase r has no such tap.
  """
  k, s, c = kernel_size, strides, crop_lo
  d_min = min(-((r + c) // s) for r in range(s))
  d_max = max((k - 1 - r - c) // s for r in range(s))
  taps = d_max - d_min + 1
  idx = np.full((s, taps), k, dtype=np.int32)
  for r in range(s):
    for j in range(taps):
      t = r + c + s * (d_max - j)
      if 0 <= t < k:
        idx[r, j] = t
  return idx, d_max


def _phase_kernel(kernel: Array, strides: int, crop_lo: int) -> Array:
  """Re-arranges a [k, k, Cin, Cout] scatter kernel to the [T, T, Cin, s*s*Cout] phase kernel."""
  k, _, cin, cout = kernel.shape
  s = strides
  idx, _ = _phase_kernel_indices(k, s, crop_lo)
  taps = idx.shape[1]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  # [s, T, s, T, Cin, Cout]: (phase_h, tap_h, phase_w, tap_w).
  gathered = padded[idx[:, :, None, None], idx[None, None, :, :]]
  gathered = gathered.transpose(1, 3, 4, 0, 2, 5)
  return gathered.reshape(taps, taps, cin, s * s * cout)


def matmul_rows(a: Array, b: Array) -> Array:
  """a [..., K] @ b [K, N] -> [..., N], as one matmul over a's leading axes flattened to rows.

  The same numbers as `jnp.dot(a, b)`, but its weight gradient comes out better on XLA:CPU: from
  a dot over a 4-D patch buffer, autodiff's rhs cotangent contracts three axes, and XLA:CPU
  lowers that by transposing the output gradient to channel-major first, fused with the
  depth-to-space or activation backward that produces it (48 of the MNIST CVAE's ~250 profiled
  ms under load, for one [25088, 128] gradient). From 2-D rows the cotangent is one
  rows-by-rows matmul that reads the gradient where it lies.
  """
  return jnp.dot(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _lean_patch_matmul(x: Array, window: Window, strides: int,
                       pads: tuple[tuple[int, int], tuple[int, int]], weights: Array) -> Array:
  return matmul_rows(_extract_patches_impl(x, window, strides, pads), weights)


def _lean_patch_matmul_fwd(x, window, strides, pads, weights):
  return _lean_patch_matmul(x, window, strides, pads, weights), (x, weights)


def _lean_patch_matmul_bwd(window, strides, pads, residuals, g):
  x, weights = residuals
  # A use of g in x's slices keeps XLA from computing them with the forward pass's own (common
  # subexpressions) and holding them until here, which would keep a patch buffer after all.
  x = x + jnp.zeros((), x.dtype) * g.reshape(-1)[0]
  dx = _col2im_impl(matmul_rows(g, weights.T), window, strides, pads, x.shape[1:3])
  rows = g.reshape(-1, g.shape[-1])
  # One [C, F] block of the weight gradient per window offset, from that offset's input slice,
  # so that no [B, Ho, Wo, k*k*C] patch buffer is kept from the forward pass or rebuilt.
  blocks = [lax.dot_general(tap.reshape(-1, tap.shape[-1]), rows, (((0,), (0,)), ((), ())))
            for tap in _patch_slices(x, window, strides, pads)]
  return dx, jnp.concatenate(blocks, axis=0).astype(weights.dtype)


_lean_patch_matmul.defvjp(_lean_patch_matmul_fwd, _lean_patch_matmul_bwd)


def patch_matmul(x: Array, window: int | Window, strides: int,
                 pads: tuple[tuple[int, int], tuple[int, int]], weights: Array,
                 lean: bool = False) -> Array:
  """`extract_patches(x, window, strides, pads)` @ weights [k_h*k_w*C, F] -> [B, Ho, Wo, F].

  lean: keep x instead of the patch buffer for the backward pass, whose weight gradient is then
  one matmul per window offset over that offset's input slice. The 'fast_low_memory' impls use
  it from 16 input channels (`_LEAN_MIN_CHANNELS`): XLA temporaries of configs/lfw_improved_ae.py's
  step 176.5 -> 135.0 MB, mnist_dvae's 93.3 -> 77.6, for steps 3-6% longer in that A/B
  (BENCHMARKS.md, twelfth session).
  """
  if not lean:
    return matmul_rows(extract_patches(x, window, strides, pads), weights)
  window, strides, pads = _patch_args(x.shape, window, strides, pads)
  return _lean_patch_matmul(x, window, strides, pads, weights)


def conv_native(x: Array, kernel: Array, strides: int,
                pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  """Cross-correlation of x [B, H, W, Cin] with kernel [k, k, Cin, Cout] via lax."""
  return lax.conv_general_dilated(x, kernel, (strides, strides), pads,
                                  dimension_numbers=_DIMENSION_NUMBERS)


# The native weight gradient's batch chunks hold at most this many output points (chunk batch
# * Ho * Wo) and at least this many examples. XLA:CPU computes a convolution's weight gradient
# as one convolution contracting batch and space, and its Eigen kernel slows down sharply once
# that contraction is long: on a 2-core AVX-512 Xeon (B = 64, 3x3, stride 1, `jax.vjp` wrt the
# kernel alone, median ms) 16 px x 32 ch 7.5 in one piece against 4.4 / 3.8 / 3.7 in 2 / 4 / 8
# batch chunks, 16 px x 64 ch 36.5 against 25.0 / 14.0 / 13.0 / 12.7 in 2 / 4 / 8 / 16, 32 px x
# 32 ch 37.9 against 37.2 / 21.3 / 14.5 / 14.7, 32 px x 16 ch 10.4 against 6.4 / 5.3 / 4.0 / 6.8,
# and 8 px x 64 ch 3.35 against 3.1-3.3; the forward pass and the input gradient gain nothing.
# In the train step (alternated, median ms): resnet_vae_fashion_mnist 111.6 in one piece, 106.0
# at most 4096 points (4 chunks at 16 px), 107.7 at most 8192; resnet_vae_speckle 407.9, 416.5
# at most 4096 (16 chunks of 4 examples at 32 px), 388.0 at most 8192 (8 of 8), 386.0 at 16384.
_WEIGHT_GRAD_CHUNK_POINTS = 4096
_WEIGHT_GRAD_CHUNK_MIN_EXAMPLES = 8


def weight_grad_chunks(batch: int, points_per_example: int,
                       max_points: int = _WEIGHT_GRAD_CHUNK_POINTS,
                       min_examples: int = _WEIGHT_GRAD_CHUNK_MIN_EXAMPLES) -> int:
  """How many equal batch chunks the native weight gradient is summed over: the fewest with at
  most max_points output points each, but none smaller than min_examples examples."""
  allowed = [c for c in range(1, batch + 1) if batch % c == 0 and batch // c >= min_examples]
  for chunks in allowed:
    if (batch // chunks) * points_per_example <= max_points:
      return chunks
  return allowed[-1] if allowed else 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_chunked_weight_grad(x: Array, kernel: Array, strides: int,
                              pads: tuple[tuple[int, int], tuple[int, int]],
                              chunks: int) -> Array:
  return conv_native(x, kernel, strides, pads)


def _conv_chunked_weight_grad_fwd(x, kernel, strides, pads, chunks):
  return conv_native(x, kernel, strides, pads), (x, kernel)


def _conv_chunked_weight_grad_bwd(strides, pads, chunks, residuals, g):
  x, kernel = residuals
  dx = jax.vjp(lambda x: conv_native(x, kernel, strides, pads), x)[1](g)[0]
  # Chunk c holds examples c, c + chunks, ...: with the batch sharded over devices in contiguous
  # blocks, every chunk stays spread evenly over them (no resharding) when chunks divides the
  # per-device batch.
  def chunk(a, c):
    return a.reshape(a.shape[0] // chunks, chunks, *a.shape[1:])[:, c]

  dkernel = None
  for c in range(chunks):
    part = jax.vjp(lambda k, c=c: conv_native(chunk(x, c), k, strides, pads),
                   kernel)[1](chunk(g, c))[0].astype(jnp.float32)
    dkernel = part if dkernel is None else dkernel + part
  return dx, dkernel.astype(kernel.dtype)


_conv_chunked_weight_grad.defvjp(_conv_chunked_weight_grad_fwd, _conv_chunked_weight_grad_bwd)


def conv_native_chunked(x: Array, kernel: Array, strides: int,
                        pads: tuple[tuple[int, int], tuple[int, int]],
                        max_points: int = _WEIGHT_GRAD_CHUNK_POINTS,
                        min_examples: int = _WEIGHT_GRAD_CHUNK_MIN_EXAMPLES) -> Array:
  """`conv_native`, whose weight gradient is summed over batch chunks of at most max_points
  output points and at least min_examples examples each (`weight_grad_chunks`): the same
  function and gradients, up to float rounding in the sum, and faster on XLA:CPU (see
  `_WEIGHT_GRAD_CHUNK_POINTS`)."""
  out_points = math.prod(conv_output_length(size, kernel.shape[0], strides, axis_pads)
                         for size, axis_pads in zip(x.shape[1:3], pads, strict=True))
  chunks = weight_grad_chunks(x.shape[0], out_points, max_points, min_examples)
  if chunks == 1:
    return conv_native(x, kernel, strides, pads)
  return _conv_chunked_weight_grad(x, kernel, strides, pads, chunks)


def conv_patches(x: Array, kernel: Array, strides: int,
                 pads: tuple[tuple[int, int], tuple[int, int]], lean: bool = False) -> Array:
  """Same result as `conv_native`, as patch extraction and one matmul (lean: `patch_matmul`)."""
  k, _, cin, cout = kernel.shape
  return patch_matmul(x, k, strides, pads, kernel.reshape(k * k * cin, cout), lean)


def _tap_contributions(x: Array, kernel: Array) -> Array:
  """Every tap's partial result x @ kernel[i, j], in NHWC: [B, H, W, k*k*Cout], channel
  (i*k + j)*Cout + c for tap (i, j) and output channel c (the layout of a patch buffer)."""
  k, _, cin, cout = kernel.shape
  return matmul_rows(x, kernel.transpose(2, 0, 1, 3).reshape(cin, k * k * cout))


def _tap_outputs(x: Array, kernel: Array) -> Array:
  """Every tap's partial result x @ kernel[i, j], tap-major: [k*k, Cout, B, H, W]."""
  k, _, _, cout = kernel.shape
  # The matmul keeps x in its NHWC layout and only its small result (k*k*Cout channels) is made
  # tap-major: asked for 'tfbhw' directly, XLA:CPU moved x itself to channel-major first (9 ms
  # of the MNIST CVAE decoder's 150 ms step).
  taps = _tap_contributions(x, kernel)
  return jnp.moveaxis(taps.reshape(*x.shape[:-1], k * k, cout), (-2, -1), (0, 1))


def conv_shifted(x: Array, kernel: Array, strides: int,
                 pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  """Same result as `conv_native`: one matmul to every tap's partial output, then their sum.

  `sum_read_taps` adds tap (i, j)'s output read at offset (i, j). Its buffer holds k*k*Cout
  values per input point where the patch form's holds k*k*Cin per output point, so it can win
  for few output channels at stride 1 (a decoder's conv to the image); at stride s it does s*s
  times the multiply-adds.
  """
  y = sum_read_taps(_tap_outputs(x, kernel), kernel.shape[0], strides, pads)
  return y.transpose(1, 2, 3, 0)


def conv_transpose_native(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                          out_size: tuple[int, int]) -> Array:
  """Scatter-semantics transposed convolution via an input-dilated lax convolution.

  Args:
    x: [B, H, W, Cin].
    kernel: [k, k, Cin, Cout], scatter layout (y[s*i + t] += x[i] * kernel[t]).
    strides: s.
    crop_lo: (rows, cols) cropped from the start of the full scatter result.
    out_size: (Ho, Wo) of the result.

  Returns:
    [B, Ho, Wo, Cout].
  """
  k = kernel.shape[0]
  pads, starts = [], []
  for size, lo_crop, out in zip(x.shape[1:3], crop_lo, out_size, strict=True):
    dilated = (size - 1) * strides + 1
    lo = k - 1 - lo_crop
    hi = out + lo_crop - dilated
    # Negative padding would mean cropping the dilated input; clip it and crop the output instead.
    pads.append((max(lo, 0), max(hi, 0)))
    starts.append(max(-lo, 0))
  y = lax.conv_general_dilated(x, jnp.flip(kernel, (0, 1)), (1, 1), pads,
                               lhs_dilation=(strides, strides),
                               dimension_numbers=_DIMENSION_NUMBERS)
  return y[:, starts[0]:starts[0] + out_size[0], starts[1]:starts[1] + out_size[1], :]


def conv_transpose_fused(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                        out_size: tuple[int, int], lean: bool = False) -> Array:
  """Same result as `conv_transpose_native`, as s*s phases computed by one stride-1 conv.

  Arguments and result shapes are those of `conv_transpose_native`. The stride-1 phase
  convolution runs over the union T x T of all phases' taps, as patch extraction and one matmul:
  on XLA:CPU that beats running it as a convolution, and its weight gradient is a plain matmul
  too.
  """
  _, _, _, cout = kernel.shape
  s = strides
  if crop_lo[0] != crop_lo[1]:
    # The layer never asks for this (its crop depends on k, s and padding only); a square phase
    # window keeps extract_patches simple.
    raise ValueError(f'conv_transpose_fused needs the same crop on both axes, got {crop_lo}')
  idx, d_max = _phase_kernel_indices(kernel.shape[0], s, crop_lo[0])
  taps = idx.shape[1]
  phase_kernel = _phase_kernel(kernel, s, crop_lo[0])
  b = x.shape[0]
  # Each phase yields ceil(out / s) rows; window offset j reads x[m + j - d_max].
  rows = [-(-out // s) for out in out_size]
  pads = tuple((d_max, m + taps - 1 - size - d_max)
               for m, size in zip(rows, x.shape[1:3], strict=True))
  z = patch_matmul(x, taps, 1, pads, phase_kernel.reshape(-1, s * s * cout), lean)
  # Depth-to-space: channel (r_h*s + r_w)*Cout + c holds output (s*m_h + r_h, s*m_w + r_w, c).
  z = z.reshape(b, rows[0], rows[1], s, s, cout).transpose(0, 1, 3, 2, 4, 5)
  z = z.reshape(b, rows[0] * s, rows[1] * s, cout)
  return z[:, :out_size[0], :out_size[1], :]


def _phase_taps(kernel_size: int, strides: int, crop_lo: int) -> list[tuple[int, int]]:
  """Per output phase r of one spatial axis: (d, n), its first tap and its number of taps.

  Output o = s*m + r reads sum_j x[m + j - d] * w[r + crop_lo + s*(d - j)] over 0 <= j < n,
  the j with 0 <= r + crop_lo + s*(d - j) < k. n is 0 for a phase without taps (k < s).
  """
  k, s, c = kernel_size, strides, crop_lo
  taps = []
  for r in range(s):
    d_hi = (k - 1 - r - c) // s
    d_lo = -((r + c) // s)
    taps.append((d_hi, max(d_hi - d_lo + 1, 0)))
  return taps


def _interleave_phases(phases: list[list[Array]], out_size: tuple[int, int]) -> Array:
  """Depth-to-space: phases[r_h][r_w] [B, M_h, M_w, C] is output (s*m_h + r_h, s*m_w + r_w)."""
  s = len(phases)
  b, m_h, m_w, c = phases[0][0].shape
  rows = [jnp.stack(row, axis=3).reshape(b, m_h, m_w * s, c) for row in phases]
  y = jnp.stack(rows, axis=2).reshape(b, m_h * s, m_w * s, c)
  return y[:, :out_size[0], :out_size[1], :]


def conv_transpose_phases(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                          out_size: tuple[int, int], lean: bool = False) -> Array:
  """Same result as `conv_transpose_native`, as s*s phases with their own patches and matmul."""
  k, _, cin, cout = kernel.shape
  s = strides
  b, h, w, _ = x.shape
  rows = [-(-out // s) for out in out_size]
  taps = [_phase_taps(k, s, c) for c in crop_lo]
  phases = []
  for r_h, (d_h, n_h) in enumerate(taps[0]):
    row = []
    for r_w, (d_w, n_w) in enumerate(taps[1]):
      if n_h == 0 or n_w == 0:
        row.append(jnp.zeros((b, rows[0], rows[1], cout), x.dtype))
        continue
      pads = ((d_h, rows[0] + n_h - 1 - h - d_h), (d_w, rows[1] + n_w - 1 - w - d_w))
      # Window offset j uses kernel row t_h - s*j: a strided slice, reversed. Slices (not a
      # gather) keep the kernel gradient a cheap pad instead of a scatter.
      t_h = r_h + crop_lo[0] + s * d_h
      t_w = r_w + crop_lo[1] + s * d_w
      sub = kernel[t_h - s * (n_h - 1):t_h + 1:s, t_w - s * (n_w - 1):t_w + 1:s][::-1, ::-1]
      row.append(patch_matmul(x, (n_h, n_w), 1, pads, sub.reshape(n_h * n_w * cin, cout), lean))
    phases.append(row)
  return _interleave_phases(phases, out_size)


def _shared_plan(kernel_size: int, strides: int, crop_lo: int, out: int) -> tuple[int, ...]:
  """Cheapest sub-pixel grid of one axis for `conv_transpose_shared`.

  Output o sits at slot (o + c0) mod s of grid point q = (o + c0)//s, c0 = crop_lo - delta; the
  taps of every slot then lie in one window of x rows q + e0 .. q + e0 + window - 1. Each delta
  in [0, s) trades window against grid length; delta = crop_lo mod s is the 'fused' layout.

  Returns:
    (delta, window, e0, q0, grid): grid points q0 .. q0 + grid - 1.
  """
  k, s = kernel_size, strides
  plans = []
  for delta in range(s):
    c0 = crop_lo - delta
    e0 = -((k - 1 - delta) // s)
    window = (s - 1 + delta) // s - e0 + 1
    q0 = c0 // s
    grid = (out - 1 + c0) // s - q0 + 1
    plans.append((delta, window, e0, q0, grid))
  # The patch buffer and the matmul both scale with grid * window.
  return min(plans, key=lambda plan: plan[4] * plan[1])


def _shared_kernel_indices(kernel_size: int, strides: int, delta: int, window: int,
                           e0: int) -> np.ndarray:
  """idx[slot, j]: kernel row that slot uses at window offset j, or k (a zero row)."""
  k, s = kernel_size, strides
  idx = np.full((s, window), k, dtype=np.int32)
  for slot in range(s):
    for j in range(window):
      t = slot + delta - s * (j + e0)
      if 0 <= t < k:
        idx[slot, j] = t
  return idx


def conv_transpose_shared(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                          out_size: tuple[int, int], lean: bool = False) -> Array:
  """Same result as `conv_transpose_native`: one patch buffer and one matmul for all phases.

  The 'fused' layout on a grid shifted per axis (`_shared_plan`) so that the window covers only
  ceil(k/s) taps where that is cheaper, at the price of one more grid row and column; the output
  is then a shifted crop of the depth-to-space result.
  """
  k, _, cin, cout = kernel.shape
  s = strides
  b = x.shape[0]
  plans = [_shared_plan(k, s, c, out) for c, out in zip(crop_lo, out_size, strict=True)]
  idx = [_shared_kernel_indices(k, s, delta, window, e0) for delta, window, e0, _, _ in plans]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  # [s, W_h, s, W_w, Cin, Cout] -> [W_h, W_w, Cin, (slot_h, slot_w, Cout)].
  gathered = padded[idx[0][:, :, None, None], idx[1][None, None, :, :]]
  win_h, win_w = idx[0].shape[1], idx[1].shape[1]
  shared_kernel = gathered.transpose(1, 3, 4, 0, 2, 5).reshape(win_h * win_w * cin, s * s * cout)
  pads = tuple((-(q0 + e0), grid + window - 1 - size + q0 + e0)
               for size, (_, window, e0, q0, grid) in zip(x.shape[1:3], plans, strict=True))
  z = patch_matmul(x, (win_h, win_w), 1, pads, shared_kernel, lean)
  grid_h, grid_w = plans[0][4], plans[1][4]
  z = z.reshape(b, grid_h, grid_w, s, s, cout).transpose(0, 1, 3, 2, 4, 5)
  z = z.reshape(b, grid_h * s, grid_w * s, cout)
  # Output o is row o + c0 - s*q0 of the depth-to-space result.
  offs = [(c - delta) - s * q0 for c, (delta, _, _, q0, _) in zip(crop_lo, plans, strict=True)]
  return z[:, offs[0]:offs[0] + out_size[0], offs[1]:offs[1] + out_size[1], :]


# 'shifted' computes in tap-major layout, [.., Cout, B, H, W], and returns transposed to NHWC.
# For a few channels that is a cheap interleave; at Cout = 64 XLA carried the channel-major
# layout into the next layer, whose slices then ran several times slower (measured on a tap-major
# form of the transposed conv: lfw's 8x8 128->64 layer alone ran 1.5x faster, the train step
# took 18% longer). So 'shifted' is only for convs to the image.
_TAP_MAJOR_MAX_FEATURES = 4


def conv_transpose_scatter(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                           out_size: tuple[int, int]) -> Array:
  """Same result as `conv_transpose_native`, as the definition: one matmul, then scatter-add.

  x @ kernel gives every input point's k*k contributions, laid out as patches, and `col2im`
  (the transpose of patch extraction) adds them into the output. No phases and no zero taps.
  The contributions' cotangent is patch extraction of the output's, and the two gradients are
  plain matmuls of it with the matmul's operands.
  """
  k = kernel.shape[0]
  s = strides
  # The output, padded by crop_lo before and by whatever the full scatter result has beyond
  # out_size after, is what a stride-s k x k patch extraction reads x's grid from.
  pads = tuple((c, (n - 1) * s + k - out - c)
               for n, c, out in zip(x.shape[1:3], crop_lo, out_size, strict=True))
  return col2im(_tap_contributions(x, kernel), k, s, pads, out_size)


# In-step A/B on a 2-core AVX-512 Intel Xeon (2026-12-03, 15-20 rounds, median ms / XLA
# temporaries MB), 'scatter' for every transposed conv against the previous rule ('shared' on the
# middle layers, 'phases' on 4x4 inputs with Cout >= 128, a tap-major 'scatter' to the image):
# mnist_cvae_onehot 45.1 / 78 against 67.7 / 81, mnist_dvae 43.3 / 86 against 62.0 / 107,
# lfw_conv_ae 66.0 / 96 against 82.0 / 114, lfw_improved_ae 121.5 / 141 against 142.2 / 145,
# restoration_cifar64_stage1 70.8 / 90 against 84.4 / 122, resnet_vae_fashion_mnist 101.6 / 89
# against 104.4 / 96, saaae_cifar64 778.4 / 364 against 811.3 / 395, configs/default.py 8.1 / 14
# against 10.6 / 18. Keeping 'phases' on the 4x4 layers or the tap-major form to the image was
# no faster anywhere (BENCHMARKS.md, fourteenth session). The phase forms multiply zero taps
# (16/9 of the work at k = 3, s = 2) or run s*s narrow matmuls; 'scatter' multiplies once, with
# k*k*Cout columns, and its scatter-add is one fused loop per output phase.
def conv_transpose_fast(x: Array, kernel: Array, strides: int, crop_lo: tuple[int, int],
                        out_size: tuple[int, int]) -> Array:
  """Same result as `conv_transpose_native`: 'scatter' on XLA:CPU, the native op elsewhere."""
  form = conv_transpose_scatter if jax.default_backend() == 'cpu' else conv_transpose_native
  return form(x, kernel, strides, crop_lo, out_size)


# Conv's 'fast_low_memory' forms run a patch matmul lean only from this many input channels: below,
# its per-tap weight-gradient matmuls are too narrow to be worth the few MB they save (an image's
# 1 or 3 channels). In-step A/B (20 rounds, ms / XLA temporaries MB), lean everywhere against
# from 16 channels: mnist_cvae_onehot 63.1 / 76.7 against 61.6 / 77.6 ('fast' 59.3 / 93.2),
# lfw_improved_ae 123.1 / 132.7 against 118.4 / 135.0 ('fast' 117.2 / 176.5), mnist_dvae 63.8 /
# 77.2 against 64.5 / 77.6 (BENCHMARKS.md, twelfth session).
_LEAN_MIN_CHANNELS = 16


def _runs_lean(lean: bool, in_features: int) -> bool:
  """Whether a 'fast' form asked for lean patch matmuls runs this layer's lean."""
  return lean and in_features >= _LEAN_MIN_CHANNELS


_CONV_TRANSPOSE_FORMS = {
    'native': conv_transpose_native,
    'fast': conv_transpose_fast,
    # Kept as a name for configs: 'scatter' keeps no patch buffer for the backward pass.
    'fast_low_memory': conv_transpose_fast,
    'fused': conv_transpose_fused,
    'phases': conv_transpose_phases,
    'shared': conv_transpose_shared,
    'scatter': conv_transpose_scatter,
}


# Conv 'fast' runs 'shifted' where it applies, and 'patches' elsewhere except the stride-1 convs
# (k > 1, on grids at least k wide) of ResNet blocks, which it runs natively on CPUs with
# AVX-512 and as 'patches' on those without. Decided inside train steps (variants alternated in
# one process, median ms/step):
# - strided convs, on a 2-core AMD EPYC with AVX and FMA but neither AVX2 nor AVX-512
#   (2026-12-02, `python benchmarks/strided_conv_rule_ab.py`; all as 'patches' against the rule
#   before, which sent only those from 32 channels to grids of 7x7 and more, and against all
#   native), once `matmul_rows` had made the patch form's weight gradient read the output
#   gradient in place, two runs: restoration_cifar64_stage1 271.2 / 281.5 against 290.2 / 295.3
#   and 305.9 / 300.6, lfw_conv_ae 195.9 / 285.0 against 206.8 / 317.7 and 250.9 / 343.4,
#   lfw_improved_ae 323.6 / 377.5 against 347.1 / 428.9 and 384.8 / 441.9; one run:
#   mnist_cvae_onehot 137.4 against 145.7, mnist_dvae 136.8 against 138.3, configs/default.py
#   27.2 against 28.8. Re-checked on an AVX-512 Xeon: lfw_conv_ae / mnist_dvae 111.1 / 85.9 ms
#   against 137.8 / 89.2 with the strided convs native.
# - stride-1 convs, the ResNet blocks' (`python benchmarks/config_ab.py --variants
#   model.conv_impl=fast_patches,model.conv_impl=fast_low_memory`, patches against native):
#   - the AVX-only EPYC, two runs each: resnet_vae_fashion_mnist 308.9 / 290.1 against 360.8 /
#     344.7, resnet_vae_mnist 317.6 / 336.0 against 351.4 / 386.1, resnet_vae_speckle (64 px)
#     1255.6 / 1394.4 against 2730.1 / 2909.8: 'patches'.
#   - an AVX-512 Intel Xeon (Emerald Rapids): resnet_vae_fashion_mnist 166.0 / 211.1 against
#     164.3 / 208.1, resnet_vae_speckle 771.8 against 841.8: even, 9% slower native on speckle.
#   - an AVX-512 AMD EPYC (Zen 5): resnet_vae_fashion_mnist 90.0 against 84.4, resnet_vae_mnist
#     86.8 against 80.5, resnet_vae_speckle 363.9 against 337.1: native 6-8% faster.
#   Native also needs less than half the temporaries (215 -> 92 MB on the Fashion-MNIST config,
#   849 -> 337 MB on speckle) and compiles 1.1-3 s faster, so AVX-512 CPUs run it.
# model.conv_impl='fast_low_memory' and 'fast_patches' fix the stride-1 choice whatever the CPU;
# 'native' keeps lax's convolution everywhere.


def fast_conv_form(kernel_size: int, strides: int, in_features: int, features: int,
                   out_size: tuple[int, int] | None = None,
                   native_stride1: bool = False) -> str:
  """The form Conv impl='fast' runs for this layer: 'patches', 'shifted' or 'native'.

  All are exact. 'shifted' needs a buffer of k*k*Cout values per input point, against the
  patch buffer's k*k*Cin per output point, and multiplies s*s times more than needed at stride
  s; it is only considered for Cout <= _TAP_MAJOR_MAX_FEATURES (see there). At stride 1 with
  k*k*Cout <= Cin (a decoder's conv to 1 or 3 image channels) it ran 1.6-2.8x faster than
  'native', whose convolution runs its few output channels slowly, and 9-15x faster than
  'patches'. With native_stride1 (the CPU has AVX-512, or impl='fast_low_memory'), the other
  stride-1 convs with k > 1 on output grids (out_size, H and W) at least k wide run 'native'.
  Every other layer runs as 'patches' (the timings are in the comment above), also where the
  output grid is smaller than the kernel on both sides: there XLA:CPU's native convolution is
  pathologically slow, and more so the wider the layer (at B = 64, 3x3, stride 1 on a 2x2 grid
  1.1 / 4.7 / 14.5 / 107 / 1242 ms fwd+bwd for 32 / 64 / 128 / 256 / 512 channels against
  'patches'' 0.4 / 1.1 / 3.3 / 7.3 / 25; `python benchmarks/conv_forms.py`, the sweep is in
  BENCHMARKS.md), and 'shifted' would sum taps that mostly fall outside the input.
  """
  on_tiny_grid = out_size is not None and max(out_size) < kernel_size
  if (not on_tiny_grid and strides == 1 and features <= _TAP_MAJOR_MAX_FEATURES
      and kernel_size * kernel_size * features <= in_features):
    return 'shifted'
  # A 1x1 conv's patches are its input: a plain matmul, nothing to gain natively.
  if (native_stride1 and strides == 1 and kernel_size > 1 and out_size is not None
      and min(out_size) >= kernel_size):
    return 'native'
  return 'patches'


def conv_fast(x: Array, kernel: Array, strides: int,
              pads: tuple[tuple[int, int], tuple[int, int]],
              native_stride1: bool | None = None, lean: bool = False) -> Array:
  """Same result as `conv_native`, by the form `fast_conv_form` picks.

  native_stride1: run the stride-1 convs (k > 1) on grids at least k wide natively; None lets the
  CPU decide (yes with AVX-512). lean: the 'patches' form keeps only its input for the backward
  pass (`patch_matmul`). The rules were fitted on XLA:CPU; on other backends (GPU, TPU) the
  native op runs.
  """
  if jax.default_backend() != 'cpu':
    return conv_native(x, kernel, strides, pads)
  if native_stride1 is None:
    native_stride1 = cpu_features.host_has_avx512()
  k, _, cin, cout = kernel.shape
  out_size = tuple(conv_output_length(size, k, strides, axis_pads)
                   for size, axis_pads in zip(x.shape[1:3], pads, strict=True))
  form = fast_conv_form(k, strides, cin, cout, out_size, native_stride1)
  if form == 'patches':
    return conv_patches(x, kernel, strides, pads, _runs_lean(lean, cin))
  if form == 'native':
    return conv_native_chunked(x, kernel, strides, pads)
  return _CONV_FORMS[form](x, kernel, strides, pads)


# 'fast' with the ResNet blocks' stride-1 convs native on any CPU, and the other layers' patch
# matmuls keeping only their input for the backward pass (`patch_matmul`'s lean form). As
# 'patches' the stride-1 convs hold k*k*Cin values per output point and their gradients in the
# backward pass: resnet_vae_fashion_mnist's step needs 215 MB of XLA temporaries as 'patches' and
# 92 MB native. 'fast' already runs them natively on AVX-512 CPUs; on an AVX-only one this made
# the steps 17-19% longer (2.2x on the 64 px speckle config).
conv_fast_low_memory = functools.partial(conv_fast, native_stride1=True, lean=True)
# 'fast' with them as 'patches' on any CPU: the rule fitted on CPUs without AVX-512, where it is
# what 'fast' runs (on an AVX-512 Xeon it was 9% faster than 'fast' on resnet_vae_speckle, for
# 2.5x the temporaries).
conv_fast_patches = functools.partial(conv_fast, native_stride1=False)


_CONV_FORMS = {
    'native': conv_native,
    'fast': conv_fast,
    'fast_low_memory': conv_fast_low_memory,
    'fast_patches': conv_fast_patches,
    'patches': conv_patches,
    'shifted': conv_shifted,
}


class Conv(nn.Module):
  """2D convolution (cross-correlation) over NHWC inputs, flax `nn.Conv`-compatible parameters.

  Attributes:
    features: output channels Cout.
    kernel_size: square kernel side k.
    strides: stride s on both spatial axes.
    padding: 'SAME' (flax/TensorFlow: output ceil(H / s)), 'VALID', or an int p (PyTorch:
      p zeros on each side, output (H + 2p - k)//s + 1).
    use_bias: add a learned bias.
    impl: 'native' (lax convolution), 'patches' (patch extraction + matmul), 'shifted' (matmul
      to per-tap outputs + their shifted sum), 'fast' ('shifted', 'patches' or native on CPU
      by `fast_conv_form`, the native ones by `conv_native_chunked`; 'native' elsewhere),
      'fast_low_memory' (`conv_fast_low_memory`) or 'fast_patches' (`conv_fast_patches`).
    dtype: computation dtype; parameters are always stored in float32.
    kernel_init: initializer of the [k, k, Cin, Cout] kernel.
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: int | str = 'SAME'
  use_bias: bool = True
  impl: str = 'native'
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the convolution.

    Args:
      x: [B, H, W, Cin] (any leading batch shape, or none).

    Returns:
      [B, Ho, Wo, Cout].
    """
    _check_layer_args('Conv', self.features, self.kernel_size, self.strides, self.padding,
                      self.impl)
    x, batch_shape = _as_nhwc(jnp.asarray(x), 'Conv')
    k, s = self.kernel_size, self.strides
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    pads = tuple(conv_output_padding(size, k, s, self.padding) for size in x.shape[1:3])
    for size, (lo, hi) in zip(x.shape[1:3], pads, strict=True):
      if size + lo + hi < k:
        raise ValueError(f'Conv: kernel_size {k} is larger than the padded input '
                         f'({size} + {lo} + {hi}); input shape {x.shape}')
    y = _CONV_FORMS[self.impl](x, kernel, s, pads)
    if bias is not None:
      y = y + bias
    return y.reshape(batch_shape + y.shape[1:])


class ConvTranspose(nn.Module):
  """2D transposed convolution with PyTorch ConvTranspose2d semantics over NHWC inputs.

  Per spatial axis, y[s*i + t - p] += x[i] * kernel[t] (plus bias), i.e. the gradient of a
  stride-s convolution, with 'kernel' of shape [k, k, Cin, Cout] and 'bias' of shape [Cout].
  A PyTorch weight [Cin, Cout, k, k] loads as weight.transpose(2, 3, 0, 1). The flax
  `nn.ConvTranspose(transpose_kernel=False)` equivalent uses kernel[::-1, ::-1] and padding
  (k - 1 - p, k - 1 - p + output_padding) on each axis.

  Attributes:
    features: output channels Cout.
    kernel_size: square kernel side k.
    strides: stride s (the upsampling factor).
    padding: an int p (PyTorch: output (H - 1)*s - 2p + k + output_padding), 'SAME' (output s*H,
      crop (k - s)//2 at the start; TensorFlow/Keras and flax 'SAME'), or 'VALID' (flax:
      output s*H + max(k - s, 0)).
    output_padding: extra rows/columns at the end (0 <= output_padding < s); int padding only.
    use_bias: add a learned bias.
    impl: 'native' (input-dilated lax convolution), or one of the rewrites, much faster on CPU
      (module docstring): 'fused', 'phases', 'shared', 'scatter', 'fast' ('scatter' on CPU,
      'native' elsewhere) or 'fast_low_memory' (the same as 'fast').
    dtype: computation dtype; parameters are always stored in float32.
    kernel_init: initializer of the [k, k, Cin, Cout] kernel.
  """
  features: int
  kernel_size: int
  strides: int = 2
  padding: int | str = 'SAME'
  output_padding: int = 0
  use_bias: bool = True
  impl: str = 'fast'
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the transposed convolution.

    Args:
      x: [B, H, W, Cin] (any leading batch shape, or none).

    Returns:
      [B, Ho, Wo, Cout], sizes as documented on the class.
    """
    _check_layer_args('ConvTranspose', self.features, self.kernel_size, self.strides,
                      self.padding, self.impl, CONV_TRANSPOSE_IMPLS)
    op = self.output_padding
    if isinstance(op, bool) or not isinstance(op, (int, np.integer)) or op < 0:
      raise ValueError(f'ConvTranspose.output_padding must be an int >= 0, got {op!r}')
    if op and isinstance(self.padding, str):
      raise ValueError('ConvTranspose.output_padding needs an int padding (PyTorch style); '
                       f'with padding={self.padding!r} the output size is fixed, got '
                       f'output_padding={op}')
    if op >= self.strides:
      # PyTorch's rule: beyond s - 1 the extra outputs could not depend on the input.
      raise ValueError(f'ConvTranspose.output_padding must be < strides ({self.strides}), '
                       f'got {op}')
    x, batch_shape = _as_nhwc(jnp.asarray(x), 'ConvTranspose')
    k, s = self.kernel_size, self.strides
    geometry = [conv_transpose_geometry(size, k, s, self.padding, op) for size in x.shape[1:3]]
    crop_lo = tuple(g[0] for g in geometry)
    out_size = tuple(g[1] for g in geometry)
    if min(out_size) < 1:
      raise ValueError(f'ConvTranspose: padding {self.padding!r} with kernel_size {k}, strides '
                       f'{s} leaves an empty output for input shape {x.shape}')
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    conv = _CONV_TRANSPOSE_FORMS[self.impl]
    y = conv(x, kernel, s, crop_lo, out_size)
    if bias is not None:
      y = y + bias
    return y.reshape(batch_shape + y.shape[1:])
