"""Shared by conv_forms.py and conv_transpose_forms.py: time each impl of one layer, alternated.

Times one jitted `jax.value_and_grad` (wrt the input and the parameters) of a scalar loss through
one layer per impl. The impls of a shape are compiled first, then run alternately (A, B, C, A, B,
C, ..., rotating which goes first) so that they see the same machine load; the table reports
medians in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jvae import bench


def _step(module: nn.Module):
  def loss(params, x, cotangent):
    # A random cotangent, not a plain sum, so that the backward is a dense matmul as in training.
    return jnp.sum(module.apply({'params': params}, x) * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def time_impls(module: nn.Module, batch: int, size: int, cin: int, cout: int, kernel_size: int,
               impls: Sequence[str], reps: int) -> dict[str, float]:
  """Median ms per impl of `module` (a Conv or ConvTranspose) on [batch, size, size, cin]."""
  rng = np.random.default_rng(0)
  k = kernel_size
  x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
  params = {'kernel': jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin),
                                  jnp.float32),
            'bias': jnp.zeros((cout,), jnp.float32)}
  out = jax.eval_shape(lambda: module.apply({'params': params}, x)).shape
  cotangent = jnp.asarray(rng.normal(size=out), jnp.float32)
  def timed(step):
    def run() -> float:
      start = time.perf_counter()
      jax.block_until_ready(step(params, x, cotangent))
      return 1e3 * (time.perf_counter() - start)
    return run

  runners = {}
  for impl in impls:
    step = _step(module.clone(impl=impl)).lower(params, x, cotangent).compile()
    jax.block_until_ready(step(params, x, cotangent))  # warm-up
    runners[impl] = timed(step)
  times = bench.alternated(runners, reps)
  return {impl: statistics.median(t) for impl, t in times.items()}


def main(doc: str, shapes: Sequence[tuple], allowed: Sequence[str], default_impls: str,
         make_module: Callable[[tuple], nn.Module], fast_form: Callable[[tuple], str],
         argv=None) -> None:
  """The CLI of both scripts: one Markdown row per shape (name, batch, size, Cin, Cout, k, ...).

  `make_module(shape)` builds the layer of a shape; `fast_form(shape)` names what impl='fast'
  runs for it.
  """
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reps', type=int, default=15)
  parser.add_argument('--impls', default=default_impls, help=f'comma-separated, from {allowed}')
  parser.add_argument('--only', default='', help='run only shapes whose name contains this')
  args = parser.parse_args(argv)
  impls = args.impls.split(',')
  for impl in impls:
    if impl not in allowed:
      parser.error(f'unknown impl {impl!r}; allowed: {allowed}')
  print(f'jax {jax.__version__}, {jax.devices()[0].platform}, median of {args.reps} alternated '
        'reps of jitted value_and_grad wrt input and params, ms')
  print()
  print('| layer | B | H=W | Cin->Cout | ' + ' | '.join(impls) + ' | fastest | fast runs |')
  print('|---|---|---|---|' + '---|' * (len(impls) + 2))
  for shape in shapes:
    if args.only not in shape[0]:
      continue
    name, batch, size, cin, cout, k = shape[:6]
    ms = time_impls(make_module(shape), batch, size, cin, cout, k, impls, args.reps)
    cells = ' | '.join(f'{ms[impl]:.2f}' for impl in impls)
    print(f'| {name} | {batch} | {size} | {cin}->{cout} | {cells} | {min(ms, key=ms.get)} | '
          f'{fast_form(shape)} |')
    sys.stdout.flush()
