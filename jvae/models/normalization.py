"""BatchNorm with flax's parameters, statistics and values, and a closed-form backward pass.

Why not `nn.BatchNorm`: its autodiff backward reduces over g * (x - mean), and XLA:CPU's
YNNPACK reductions do not fuse the broadcast subtraction, so XLA kept x - mean, a second
activation-sized array beside the layer's input, from the forward pass to the backward one for
every BatchNorm layer (lfw_improved_ae: 29 MB of its step's 118 MB of temporaries; BENCHMARKS.md,
fifteenth session). Here the backward pass reduces g and g * x, products of arrays it holds
anyway, and forms sum(g * (x - mean)) as sum(g * x) - mean * sum(g).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance over all axes but the last, in float32 at least.

  The variance is E[x^2] - E[x]^2 clipped at 0, as flax computes it (use_fast_variance).
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = jnp.maximum(0.0, jnp.square(x).mean(axes) - jnp.square(mean))
  return mean, var


def _normalize(x, mean, inverse_std, scale, bias):
  """(x - mean) * inverse_std * scale + bias in the statistics' dtype, cast to x's."""
  return ((x - mean) * (inverse_std * scale) + bias).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x: jax.Array, scale: jax.Array, bias: jax.Array,
                    epsilon: float) -> jax.Array:
  """x normalised by its own per-channel batch statistics, then scaled and shifted.

  Equal to flax's `nn.BatchNorm` in training mode in values; the gradients are the same
  function, computed by the closed form in `_batch_normalize_bwd` rather than by autodiff.
  """
  return _batch_normalize_fwd(x, scale, bias, epsilon)[0]


def _batch_normalize_fwd(x, scale, bias, epsilon):
  mean, var = _statistics(x)
  inverse_std = jax.lax.rsqrt(var + epsilon)
  return _normalize(x, mean, inverse_std, scale, bias), (x, mean, inverse_std, scale)


def _batch_normalize_bwd(epsilon, residuals, g):
  del epsilon  # in inverse_std
  x, mean, inverse_std, scale = residuals
  stats_dtype = mean.dtype
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  g = g.astype(stats_dtype)
  x_wide = x.astype(stats_dtype)
  sum_g = g.sum(axes)
  # sum(g * x_hat) without x - mean as an array of its own (the module docstring's reason).
  sum_g_x_hat = inverse_std * ((g * x_wide).sum(axes) - mean * sum_g)
  x_hat = (x_wide - mean) * inverse_std
  dx = (scale * inverse_std) * (g - sum_g / count - x_hat * (sum_g_x_hat / count))
  return dx.astype(x.dtype), sum_g_x_hat, sum_g


batch_normalize.defvjp(_batch_normalize_fwd, _batch_normalize_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over every axis but the last (flax's defaults otherwise: use_fast_variance,
  float32 statistics, scale and bias), with `batch_normalize`'s backward pass in training.

  The same variables as flax's layer ('scale' and 'bias' params, 'mean' and 'var' batch_stats),
  so checkpoints of either load into the other. Under `jax.jit` over a sharded batch the
  statistics are the global batch's, under shard_map each device's (jvae/steps.py).
  """

  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    features = (x.shape[-1],)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    scale = self.param('scale', nn.initializers.ones, features, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, features, jnp.float32)
    if use_running_average:
      return _normalize(x, running_mean.value, jax.lax.rsqrt(running_var.value + self.epsilon),
                        scale, bias)
    if not self.is_initializing():
      # The same reductions as batch_normalize's forward pass: XLA computes them once.
      mean, var = _statistics(jax.lax.stop_gradient(x))
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return batch_normalize(x, scale, bias, self.epsilon)
