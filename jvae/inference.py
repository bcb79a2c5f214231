"""Using a trained model: `model = jvae.load('runs/<name>')`, then encode, decode, reconstruct,
sample, interpolate, restore and score images of the caller's own format.

Value ranges (the rule every image-taking method follows):

  uint8 in              -> uint8 out, [0, 255].
  float in (any float   -> float of the same dtype out, in the model's `float_range`: 'unit'
    dtype, numpy or JAX)   [0, 1] (the default) or 'symmetric' [-1, 1], chosen at `load`.
                           Float inputs are clipped to that range (training inputs were clipped
                           too); values more than half the range's width outside it raise
                           ValueError, which is what [-1, 1] images read as [0, 1] (or 0..255
                           floats) look like.
  other dtypes          -> ValueError.

Whatever the run's own `data.value_range`, this conversion happens here, so callers never see it.
Methods that make images from codes (`decode`, `sample`) take `dtype='float32'` (in
`float_range`) or `dtype='uint8'`.

Layouts: [H, W] (one grayscale image), [H, W, C] (one image), [B, H, W] (grayscale batch) and
[B, H, W, C] (batch), C in 1 or 3. A 3-D array is one [H, W, C] image when its last axis is 1 or
3, otherwise a [B, H, W] batch. Image outputs have the input's layout and channel count (a
grayscale image given to an RGB model comes back grayscale, converted with ITU-R 601 weights
as Pillow does); a single image in gives a single result out (no batch axis), for codes and
scores too. Images of another size than the model's H x W are resized to it with the same
Pillow resampling the training data went through, and image outputs are at the model's size;
`restore_tiled` processes one image of any size at full resolution instead.

Every method is `jax.jit`-compiled once per batch shape. Batches are cut into chunks of at most
`max_batch` images and each chunk is padded to the next power of two, so any batch size reuses
one of at most log2(max_batch) + 1 compiled shapes instead of compiling anew for every size.
Results come back as numpy arrays on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jvae import distributions, losses, runs, tiling, trainer
from jvae.data import sources

FLOAT_RANGES = ('unit', 'symmetric')
DEFAULT_MAX_BATCH = 256
# ITU-R 601-2 luma weights, the ones Pillow's RGB -> L conversion uses for uint8 images.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def load(workdir: str, checkpoint: str | int = 'best', *, float_range: str = 'unit',
         max_batch: int = DEFAULT_MAX_BATCH) -> LoadedModel:
  """Restores the trained run in `workdir` for inference, without reading its data.

  Args:
    workdir: a directory written by `train.py`.
    checkpoint: 'best' (falls back to 'latest' when the run kept no best), 'latest', or a step
      number (int or digits) among the kept checkpoints.
    float_range: how float images are read and written: 'unit' [0, 1] or 'symmetric' [-1, 1].
    max_batch: the largest batch one compiled call processes; a power of two.

  Returns:
    A `LoadedModel` bound to the run's config and parameters.
  """
  if isinstance(checkpoint, str) and checkpoint.isdigit():
    checkpoint = int(checkpoint)
  run = runs.load_run(workdir, checkpoint, open_data=False)
  return LoadedModel(run, float_range=float_range, max_batch=max_batch)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a caller laid out its images, so that results go back the same way.

  Attributes:
    single: the input was one image (no batch axis).
    channel_axis: the input had a trailing channel axis.
    channels: 1 or 3, the input's channel count.
    dtype: uint8 or a float dtype.
  """
  single: bool
  channel_axis: bool
  channels: int
  dtype: np.dtype


def parse_layout(shape: tuple[int, ...], dtype: Any) -> Layout:
  """The `Layout` of an image array of `shape` and `dtype`, by the rule in the module doc."""
  dtype = np.dtype(dtype)
  if dtype != np.uint8 and not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'images have dtype {dtype}; allowed: uint8 in [0, 255] or floats (see '
                     "jvae.inference's float_range). Convert other integer types yourself, e.g. "
                     '(x >> 8).astype(np.uint8) for 16-bit images')
  ndim = len(shape)
  if ndim == 2:
    return Layout(True, False, 1, dtype)
  if ndim == 3:
    if shape[-1] in (1, 3):
      return Layout(True, True, shape[-1], dtype)
    return Layout(False, False, 1, dtype)
  if ndim == 4 and shape[-1] in (1, 3):
    return Layout(False, True, shape[-1], dtype)
  raise ValueError(f'images have shape {tuple(shape)}; allowed: [H, W], [H, W, C], [B, H, W] or '
                   '[B, H, W, C] with C in 1 (grayscale) or 3 (RGB); drop an alpha channel with '
                   'x[..., :3]')


def _as_batch(images: np.ndarray, layout: Layout) -> np.ndarray:
  """Any accepted layout -> [B, H, W, C]."""
  if not layout.channel_axis:
    images = images[..., None]
  return images[None] if layout.single else images


def _range_bounds(value_range: str) -> tuple[float, float]:
  return (-1.0, 1.0) if value_range == 'symmetric' else (0.0, 1.0)


def _to_unit(images: np.ndarray, float_range: str) -> np.ndarray:
  """uint8 or float images in `float_range` -> float32 in [0, 1], clipped."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  x = np.asarray(images, np.float32)
  low, high = _range_bounds(float_range)
  margin = 0.5 * (high - low)
  if x.size and not np.all(np.isfinite(x)):
    raise ValueError('float images hold NaN or infinite values')
  if x.size and (x.min() < low - margin or x.max() > high + margin):
    other = 'symmetric' if float_range == 'unit' else 'unit'
    raise ValueError(
        f'float images have values in [{x.min():.3g}, {x.max():.3g}], far outside the '
        f'{float_range!r} range [{low:g}, {high:g}] this model reads floats in; pass '
        f"float_range='{other}' to jvae.load, or give uint8 images for 0..255 data")
  return (np.clip(x, low, high) - low) / (high - low)


def _from_unit(unit: np.ndarray, dtype: np.dtype, float_range: str) -> np.ndarray:
  """float [0, 1] -> uint8 [0, 255] or `dtype` floats in `float_range`."""
  unit = np.clip(np.nan_to_num(unit.astype(np.float32), nan=0.0), 0.0, 1.0)
  if dtype == np.uint8:
    return np.round(unit * 255.0).astype(np.uint8)
  low, high = _range_bounds(float_range)
  return (unit * (high - low) + low).astype(dtype)


def _convert_channels(unit: np.ndarray, channels: int) -> np.ndarray:
  """float [..., C] -> [..., channels], C and channels in 1, 3."""
  if unit.shape[-1] == channels:
    return unit
  if channels == 1:
    return (unit @ _LUMA)[..., None].astype(np.float32)
  return np.repeat(unit, channels, axis=-1)


def _resize_uint8(images: np.ndarray, hw: tuple[int, int], channels: int) -> np.ndarray:
  """uint8 [B, H, W, C] -> [B, h, w, channels] exactly as the data sources convert and resize."""
  mode = {1: 'L', 3: 'RGB'}[images.shape[-1]]
  return np.stack([sources._pil_to_array(  # pylint: disable=protected-access
      Image.fromarray(image[..., 0] if mode == 'L' else image, mode), (hw[1], hw[0]), channels)
                   for image in images])


def _resize_float(unit: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """float32 [B, H, W, C] -> [B, h, w, C] with the data sources' filters, channel by channel."""
  height, width = unit.shape[1:3]
  resample = sources._resample_filter(height, width, hw)  # pylint: disable=protected-access
  out = np.empty((unit.shape[0], *hw, unit.shape[-1]), np.float32)
  for b in range(unit.shape[0]):
    for c in range(unit.shape[-1]):
      image = Image.fromarray(np.ascontiguousarray(unit[b, ..., c]), 'F')
      out[b, ..., c] = np.asarray(image.resize((hw[1], hw[0]), resample))
  return out


def interpolation_path(a: np.ndarray, b: np.ndarray, steps: int, spherical: bool = False
                       ) -> np.ndarray:
  """Codes from `a` to `b` [D] in `steps` >= 2 evenly spaced steps: float32 [steps, D].

  Linear: (1 - t) a + t b, t = 0 .. 1, so the ends are `a` and `b` exactly. Spherical: the
  direction moves along the great circle from a/|a| to b/|b| at constant angular speed (slerp)
  while the norm moves linearly from |a| to |b|, so every code has norm (1 - t)|a| + t|b|. That
  keeps the path in the shell where Gaussian codes live instead of cutting through the origin.
  Codes that are zero, or (anti)parallel, have no unique great circle; they get the linear path.
  """
  if steps < 2:
    raise ValueError(f'steps must be >= 2; got {steps}')
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  t = np.linspace(0.0, 1.0, steps)[:, None]
  if not spherical:
    return ((1.0 - t) * a + t * b).astype(np.float32)
  norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
  if min(norm_a, norm_b) < 1e-12:
    return ((1.0 - t) * a + t * b).astype(np.float32)
  unit_a, unit_b = a / norm_a, b / norm_b
  omega = np.arccos(np.clip(unit_a @ unit_b, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return ((1.0 - t) * a + t * b).astype(np.float32)
  direction = (np.sin((1.0 - t) * omega) * unit_a + np.sin(t * omega) * unit_b) / np.sin(omega)
  return (((1.0 - t) * norm_a + t * norm_b) * direction).astype(np.float32)


def _next_power_of_two(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def _build_functions(model, config: ml_collections.ConfigDict) -> dict[str, Callable]:
  """The jitted pure functions of (variables, model-range inputs, labels[, key])."""
  options = trainer.compiler_options(config)

  def encode(variables, x, labels):
    code, logvar, _ = model.apply(variables, x, labels, method='encode')
    return code, logvar

  def decode(variables, z, labels):
    logits = model.apply(variables, z, labels, method='decode')
    return model.apply(variables, logits, method='activate')

  def reconstruct(variables, x, labels, key):
    # key None (a static pytree structure) selects the posterior mean; a key draws z.
    rngs = None if key is None else {'latent': key}
    outputs = model.apply(variables, x, labels, train=False, sample=key is not None, rngs=rngs)
    return outputs['reconstruction']

  def score(variables, x, labels):
    outputs = model.apply(variables, x, labels, train=False, sample=False)
    error = losses.reconstruction_nll(config.loss.reconstruction, outputs['logits'],
                                      outputs['reconstruction'], x, config.loss.gaussian_sigma)
    scores = {'error': error}
    if 'mu' in outputs:
      # The plain Gaussian KL at beta = 1, as jvae.anomaly's 'nelbo': an anchor's KL weights
      # shape the training loss, not the ELBO.
      scores['nelbo'] = error + distributions.gaussian_kl(outputs['mu'], outputs['logvar'])
    return scores

  return {name: jax.jit(fn, compiler_options=options) for name, fn in
          (('encode', encode), ('decode', decode), ('reconstruct', reconstruct),
           ('score', score))}


class LoadedModel:
  """A trained VAE or autoencoder bound to its config and parameters. Build it with `load`.

  Attributes:
    run: the restored `jvae.runs.TrainedRun` (config, model, state, step).
    config: the run's config.
    image_shape: (H, W, C), the input size the model was built for.
    kind: 'vae' or 'ae'.
    latent_dim: D, the code size.
    float_range: 'unit' or 'symmetric': how float images are read and written.
    max_batch: the largest batch one compiled call takes.
    functions: the jitted pure functions (encode, decode, reconstruct, score) of
      (variables, inputs in the run's value range, labels[, key]), for callers that manage
      their own batches; `functions[name]._cache_size()` counts compiled shapes.
  """

  def __init__(self, run: runs.TrainedRun, float_range: str = 'unit',
               max_batch: int = DEFAULT_MAX_BATCH):
    if float_range not in FLOAT_RANGES:
      raise ValueError(f'float_range is {float_range!r}; allowed: {", ".join(FLOAT_RANGES)}')
    if max_batch < 1 or max_batch & (max_batch - 1):
      raise ValueError(f'max_batch must be a power of two >= 1; got {max_batch}')
    self.run = run
    self.config = run.config
    self.image_shape = tuple(int(d) for d in run.experiment.image_shape)
    self.kind = run.config.model.kind
    self.latent_dim = int(run.config.model.latent_dim)
    self.float_range = float_range
    self.max_batch = max_batch
    self.variables = run.variables
    self.functions = _build_functions(run.experiment.model, run.config)

  def __repr__(self) -> str:
    return (f'LoadedModel({self.run.workdir!r}, {self.kind}, step={self.run.step}, '
            f'checkpoint={self.run.checkpoint!r}, image_shape={self.image_shape}, '
            f'latent_dim={self.latent_dim}, task={self.config.task!r})')

  # ---------------------------------------------------------------------------- conversions

  def _model_range(self, unit: np.ndarray) -> np.ndarray:
    return unit * 2.0 - 1.0 if self.config.data.value_range == 'symmetric' else unit

  def _unit_range(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x + 1.0) / 2.0 if self.config.data.value_range == 'symmetric' else x

  def _prepare(self, images: Any) -> tuple[np.ndarray, Layout]:
    """Caller images -> (model inputs float32 [B, H, W, C] in the run's range, their layout)."""
    images = np.asarray(images)
    layout = parse_layout(images.shape, images.dtype)
    batch = _as_batch(images, layout)
    if not batch.shape[0]:
      raise ValueError('got an empty batch of images')
    height, width, channels = self.image_shape
    if batch.dtype == np.uint8:
      if batch.shape[1:] != self.image_shape:
        batch = _resize_uint8(batch, (height, width), channels)
      unit = _to_unit(batch, self.float_range)
    else:
      unit = _convert_channels(_to_unit(batch, self.float_range), channels)
      if unit.shape[1:3] != (height, width):
        # Lanczos overshoots at edges; the model only ever saw values in range.
        unit = np.clip(_resize_float(unit, (height, width)), 0.0, 1.0)
    return self._model_range(unit), layout

  def _finish(self, outputs: np.ndarray, layout: Layout) -> np.ndarray:
    """Model outputs [B, H, W, C] in the run's range -> the caller's layout, dtype and range."""
    return self._finish_unit(self._unit_range(outputs), layout)

  def _finish_unit(self, unit: np.ndarray, layout: Layout) -> np.ndarray:
    """Images [B, H, W, C] in [0, 1] -> the caller's layout, dtype and range."""
    unit = _convert_channels(np.clip(unit, 0.0, 1.0), layout.channels)
    out = _from_unit(unit, layout.dtype, self.float_range)
    if not layout.channel_axis:
      out = out[..., 0]
    return out[0] if layout.single else out

  def _image_layout(self, dtype: Any, single: bool) -> Layout:
    dtype = np.dtype(dtype)
    parse_layout((1, 1, self.image_shape[-1]), dtype)  # Checks the dtype.
    return Layout(single, True, self.image_shape[-1], dtype)

  def check_labels(self, labels: Any, count: int) -> np.ndarray | None:
    """Labels for `count` images as int32 [count], or None for a model without conditioning.

    Raises ValueError when a conditioned model gets none, an unconditioned one gets some, or a
    label is outside [0, num_classes).
    """
    model = self.config.model
    if model.conditioning == 'none':
      if labels is not None:
        raise ValueError('this model is not conditioned on labels (model.conditioning is '
                         "'none'); pass labels=None")
      return None
    if labels is None:
      raise ValueError(f'this model is conditioned on labels (model.conditioning='
                       f'{model.conditioning!r}); pass labels: an int or ints [B] in '
                       f'[0, {model.num_classes})')
    labels = np.broadcast_to(np.asarray(labels, np.int32), (count,))
    if labels.min() < 0 or labels.max() >= model.num_classes:
      raise ValueError(f'labels must be in [0, {model.num_classes}); got '
                       f'[{labels.min()}, {labels.max()}]')
    return labels

  def _batched(self, name: str, arrays: tuple[np.ndarray | None, ...], key: jax.Array | None = None
               ) -> Any:
    """Runs functions[name] over [N, ...] arrays in padded chunks; numpy results [N, ...]."""
    fn = self.functions[name]
    count = len(arrays[0])
    results = []
    for index, start in enumerate(range(0, count, self.max_batch)):
      size = min(self.max_batch, count - start)
      padded = _next_power_of_two(size)
      chunk = tuple(None if a is None else np.concatenate(
          [a[start:start + size], np.zeros((padded - size, *a.shape[1:]), a.dtype)])
          for a in arrays)
      args = (self.variables, *chunk)
      if name == 'reconstruct':
        args += (None if key is None else jax.random.fold_in(key, index),)
      results.append(jax.tree.map(lambda x, n=size: np.asarray(x)[:n], fn(*args)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *results)

  def _forward(self, x: np.ndarray, labels: np.ndarray | None, key: jax.Array | None
               ) -> np.ndarray:
    return self._batched('reconstruct', (x, labels), key)

  # ------------------------------------------------------------------------------ the API

  def encode(self, images: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes of images.

    Args:
      images: images in any layout and range of the module doc.
      labels: for label-conditioned models, an int or ints [B] in [0, num_classes).

    Returns:
      (mu, logvar), float32 [B, D] ([D] for a single image): the posterior mean and
      log-variance for VAEs; (z, None) for autoencoders.
    """
    x, layout = self._prepare(images)
    code, logvar = self._batched('encode', (x, self.check_labels(labels, len(x))))
    if layout.single:
      return code[0], None if logvar is None else logvar[0]
    return code, logvar

  def _check_decodable(self) -> None:
    if self.config.model.decoder == 'conv' and self.config.model.skip_stages:
      raise ValueError(f'this model\'s decoder adds encoder stage outputs (model.skip_stages='
                       f'{self.config.model.skip_stages}), so it cannot decode a code alone; use '
                       'reconstruct or restore on images')

  def decode(self, z: Any, labels: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """Images of codes.

    Args:
      z: float codes [B, D] or one code [D].
      labels: for label-conditioned models, an int or ints [B].
      dtype: np.float32 (values in `float_range`) or np.uint8.

    Returns:
      [B, H, W, C] images of the model's size and channels ([H, W, C] for one code).
    """
    self._check_decodable()
    z = np.asarray(z, np.float32)
    single = z.ndim == 1
    z = z[None] if single else z
    if z.ndim != 2 or z.shape[-1] != self.latent_dim or not len(z):
      raise ValueError(f'codes have shape {z.shape}; expected [B, {self.latent_dim}] or '
                       f'[{self.latent_dim}]')
    outputs = self._batched('decode', (z, self.check_labels(labels, len(z))))
    return self._finish(outputs, self._image_layout(dtype, single))

  def reconstruct(self, images: Any, key: jax.Array | None = None, labels: Any = None
                  ) -> np.ndarray:
    """Reconstructions in the caller's layout and range.

    Args:
      images: images in any layout and range of the module doc.
      key: None for the deterministic reconstruction (the decoded posterior mean for VAEs);
        a PRNG key to decode a sample z ~ q(z|x) instead (VAEs; autoencoders ignore it).
      labels: for label-conditioned models, an int or ints [B].
    """
    x, layout = self._prepare(images)
    return self._finish(self._forward(x, self.check_labels(labels, len(x)), key), layout)

  def restore(self, corrupted: Any, labels: Any = None) -> np.ndarray:
    """The clean images a denoising, restoration or masked-recovery model infers from corrupted
    ones (its deterministic output, the decoded posterior mean for VAEs).

    The model is what learnt the corruption (config.corruption), so this equals `reconstruct`
    without a key; for a model trained with task='reconstruct' it is only a projection onto
    what the model learnt. Images of another size are resized; see `restore_tiled`.
    """
    return self.reconstruct(corrupted, None, labels)

  def restore_tiled(self, image: Any, overlap: float = 0.25, labels: Any = None) -> np.ndarray:
    """Restores one image of any size at full resolution, in the caller's layout and range.

    The image is cut into overlapping tiles of the model's size (mirror-padded when smaller),
    each tile is restored, and the tiles are blended with a smooth window (`jvae.tiling`). An
    image of exactly the model's size and channel count gives exactly `restore(image)`.

    Args:
      image: one image [H, W] or [H, W, C], any H and W.
      overlap: the least overlap of neighbouring tiles, a fraction in [0, 1) of the tile size.
      labels: for label-conditioned models, the image's int label.
    """
    array = np.asarray(image)
    layout = parse_layout(array.shape, array.dtype)
    if not layout.single:
      raise ValueError(f'restore_tiled takes one image [H, W] or [H, W, C]; got {array.shape}')
    height, width, channels = self.image_shape
    unit = _convert_channels(_to_unit(_as_batch(array, layout)[0], self.float_range), channels)
    label = None if labels is None else np.asarray(labels, np.int32).reshape(())

    def restore_tiles(tiles: np.ndarray) -> np.ndarray:
      labels_ = self.check_labels(label, len(tiles))
      return self._unit_range(self._forward(self._model_range(tiles), labels_, None))

    blended = tiling.map_tiled(unit, restore_tiles, (height, width),
                               tiling.overlap_pixels((height, width), overlap), self.max_batch)
    return self._finish_unit(blended[None], layout)

  def sample(self, n: int, key: jax.Array, labels: Any = None, temperature: float = 1.0,
             dtype: Any = np.float32) -> np.ndarray:
    """`n` images decoded from z ~ N(0, temperature^2 I): [n, H, W, C] (VAEs only).

    Args:
      n: how many, >= 1.
      key: the PRNG key of the draw; the same key gives the same images.
      labels: for label-conditioned models, an int or ints [n].
      temperature: the prior's standard deviation scale; < 1 gives more typical images.
      dtype: np.float32 (values in `float_range`) or np.uint8.
    """
    if self.kind != 'vae':
      raise ValueError("sample needs a VAE (model.kind='vae'); an autoencoder has no prior "
                       'to draw codes from')
    if n < 1:
      raise ValueError(f'n must be >= 1; got {n}')
    z = temperature * np.asarray(jax.random.normal(key, (n, self.latent_dim)), np.float32)
    return self.decode(z, labels, dtype)

  def interpolate(self, a: Any, b: Any, steps: int = 8, spherical: bool = False,
                  labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images along a path between the codes of two images.

    Args:
      a, b: two single images in any layout and range of the module doc (b converted to a's).
      steps: images on the path, >= 2, ends included.
      spherical: slerp the direction and interpolate the norm linearly (see
        `interpolation_path`) instead of a straight line.
      labels: for label-conditioned models, the int label used to encode and decode.

    Returns:
      (images [steps, ...] in a's layout and range, codes float32 [steps, D]); the codes are
      the posterior means (VAE) or codes (AE) of a and b at the ends.
    """
    self._check_decodable()
    x_a, layout = self._prepare(a)
    x_b, layout_b = self._prepare(b)
    if not (layout.single and layout_b.single):
      raise ValueError('interpolate takes two single images')
    pair_labels = self.check_labels(labels, 2)
    codes, _ = self._batched('encode', (np.concatenate([x_a, x_b]), pair_labels))
    path = interpolation_path(codes[0], codes[1], steps, spherical)
    path_labels = None if pair_labels is None else np.full(steps, pair_labels[0], np.int32)
    outputs = self._batched('decode', (path, path_labels))
    return self._finish(outputs, dataclasses.replace(layout, single=False)), path

  def score(self, images: Any, labels: Any = None) -> dict[str, np.ndarray]:
    """Per-image anomaly scores, higher = more unusual, as `jvae.anomaly` defines them.

    Returns:
      {'error': float64 [B]} the run's reconstruction loss (loss.reconstruction, summed over
      pixels) of the deterministic reconstruction, and for VAEs 'nelbo' [B]: that plus
      KL(q(z|x) || N(0, I)), the negative ELBO at the posterior mean. Scalars for one image.
    """
    x, layout = self._prepare(images)
    scores = self._batched('score', (x, self.check_labels(labels, len(x))))
    return {name: (value[0] if layout.single else value).astype(np.float64)
            for name, value in scores.items()}
