"""Microbenchmark of the ConvTranspose impls on the decoder layers of our configs.

Times one jitted `jax.value_and_grad` (wrt the input and the parameters) of a scalar loss through
one `jvae.models.layers.ConvTranspose` layer, per impl, at each config's layer shapes and batch
size. The impls of a shape are compiled first, then run alternately (A, B, C, A, B, C, ...,
rotating which goes first) so that they see the same machine load; the table reports medians.

  python benchmarks/conv_transpose_forms.py [--reps 15] [--impls native,fused,phases,shared]
      [--only saaae]

Not part of the test suite: 'native' alone takes seconds per rep on the larger layers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jvae.models import layers

# (name, batch, size, Cin, Cout, kernel_size, strides, padding, output_padding): every decoder
# transposed conv of the configs named, at their batch size.
SHAPES = [
    ('saaae k4s2p1', 64, 4, 512, 256, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 8, 256, 128, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 16, 128, 64, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 32, 64, 3, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 4, 256, 128, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 8, 128, 64, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 16, 64, 32, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 32, 32, 3, 4, 2, 1, 0),
    ('mnist_cvae k3s2SAME', 128, 7, 64, 64, 3, 2, 'SAME', 0),
    ('mnist_cvae k3s2SAME', 128, 14, 64, 32, 3, 2, 'SAME', 0),
    ('resnet_vae k3s2p1op1', 64, 4, 256, 128, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 8, 128, 64, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 16, 64, 32, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 32, 32, 1, 3, 2, 1, 1),
]


def _step(module: layers.ConvTranspose):
  def loss(params, x, cotangent):
    # A random cotangent, not a plain sum, so that the backward is a dense matmul as in training.
    return jnp.sum(module.apply({'params': params}, x) * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def time_shape(shape, impls, reps):
  _, batch, size, cin, cout, k, s, padding, output_padding = shape
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
  params = {'kernel': jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin),
                                  jnp.float32),
            'bias': jnp.zeros((cout,), jnp.float32)}
  module = layers.ConvTranspose(cout, k, s, padding, output_padding)
  out = jax.eval_shape(lambda: module.apply({'params': params}, x)).shape
  cotangent = jnp.asarray(rng.normal(size=out), jnp.float32)
  steps = {}
  for impl in impls:
    step = _step(module.clone(impl=impl)).lower(params, x, cotangent).compile()
    jax.block_until_ready(step(params, x, cotangent))  # warm-up
    steps[impl] = step
  times = {impl: [] for impl in impls}
  for rep in range(reps):
    order = impls[rep % len(impls):] + impls[:rep % len(impls)]
    for impl in order:
      start = time.perf_counter()
      jax.block_until_ready(steps[impl](params, x, cotangent))
      times[impl].append(time.perf_counter() - start)
  return {impl: 1e3 * statistics.median(t) for impl, t in times.items()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reps', type=int, default=15)
  parser.add_argument('--impls', default='native,fused,phases,shared,scatter',
                      help=f'comma-separated, from {layers.CONV_TRANSPOSE_IMPLS}')
  parser.add_argument('--only', default='', help='run only shapes whose name contains this')
  args = parser.parse_args(argv)
  impls = args.impls.split(',')
  for impl in impls:
    if impl not in layers.CONV_TRANSPOSE_IMPLS:
      parser.error(f'unknown impl {impl!r}; allowed: {layers.CONV_TRANSPOSE_IMPLS}')
  print(f'jax {jax.__version__}, {jax.devices()[0].platform}, median of {args.reps} alternated '
        'reps of jitted value_and_grad wrt input and params, ms')
  print()
  print('| layer | B | H=W | Cin->Cout | ' + ' | '.join(impls) + ' | fastest | fast runs |')
  print('|---|---|---|---|' + '---|' * (len(impls) + 2))
  for shape in SHAPES:
    if args.only not in shape[0]:
      continue
    ms = time_shape(shape, impls, args.reps)
    name, batch, size, cin, cout, k, s, padding, output_padding = shape
    cells = ' | '.join(f'{ms[impl]:.2f}' for impl in impls)
    crop, out = layers.conv_transpose_geometry(size, k, s, padding, output_padding)
    fast = layers.fast_conv_transpose_form(k, s, (crop, crop), (out, out), cout, cin,
                                           (size, size))
    print(f'| {name} | {batch} | {size} | {cin}->{cout} | {cells} | {min(ms, key=ms.get)} | '
          f'{fast} |')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
