"""The shared base config every file in `configs/` starts from, and its validation.

Every behaviour of the library is a field here. `validate_config` checks a finished config against
this base before any data is read or anything compiles: unknown fields, wrong types, values outside
their allowed set or range, and combinations that cannot work all raise `ConfigError` naming the
field and what is allowed.
"""

from __future__ import annotations

from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config field has a value the library cannot use. The message names the field."""


def base_config() -> ml_collections.ConfigDict:
  """All fields with their defaults: a small conv VAE on scikit-learn's bundled digits."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # reconstruct: x -> x. denoise: corrupt(x) -> x with `corruption` applied inside the step.
  c.task = 'reconstruct'

  c.data = ml_collections.ConfigDict()
  # tfds:<name> | npz:<path> | folder:<path> | builtin:digits | builtin:speckle
  # | pairs:<distorted_dir>,<clear_dir> (records add the distorted image as the model input)
  c.data.source = 'builtin:digits'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.image_size = 0  # square side in pixels; 0 keeps the source's own size
  c.data.channels = 0  # 1 (grayscale) or 3 (RGB); 0 keeps the source's own
  c.data.value_range = 'unit'  # unit: [0, 1]; symmetric: [-1, 1]
  # dynamic: pixels become Bernoulli draws with the pixel's intensity as probability, afresh at
  # every training step and once (keyed by seed and example index) for evaluation, the standard
  # protocol for likelihoods on binarized MNIST. none: intensities as they are.
  c.data.binarize = 'none'
  # Sources without a held-out split (a flat folder, digits) hold out this fraction, by seed.
  c.data.holdout_fraction = 0.2
  # Class ids dropped from every split of a labeled source, e.g. (3,) to train a one-class
  # anomaly detector without the digit 3 (configs/mnist_one_class_ae.py).
  c.data.exclude_labels = ()
  c.data.num_workers = 0  # grain worker processes; 0 reads in the main process
  # Threads reading batches ahead of the device-prefetch thread (0: that thread reads them).
  # Worth it only where a read is slow (a folder's files decoded on every read): each thread's
  # hand-off costs grain ~60-100 us of CPU per batch, taken from the train step on 2 cores
  # (configs/default.py's batch is read in 8 us; BENCHMARKS.md, twelfth session).
  c.data.prefetch_threads = 0
  # Training batches put on the devices ahead of the step by a background thread (0: on the
  # training thread, between steps). With train.reuse_step_buffers the step runs on the
  # training thread, so this is what keeps the host-to-device copy off the step's path.
  c.data.device_prefetch = 2
  c.data.on_bad_image = 'skip'  # skip (and report) or error, for unreadable files in folders
  c.data.tfds_data_dir = ''  # '' uses TFDS's default
  c.data.speckle_num_train = 4096
  c.data.speckle_num_eval = 512
  c.data.speckle_pupil_fraction = 0.25  # pupil radius as a fraction of the image side

  c.model = ml_collections.ConfigDict()
  c.model.kind = 'vae'  # vae | ae
  c.model.latent_dim = 16
  c.model.encoder = 'conv'  # conv | mlp
  c.model.decoder = 'conv'  # conv | mlp
  c.model.activation = 'relu'  # relu | silu | gelu | leaky_relu | tanh
  # Conv stacks. Decoder stages mirror these unless decoder_features is set.
  c.model.encoder_features = (32, 64)
  c.model.decoder_features = ()  # () = reversed encoder_features
  c.model.kernel_size = 3
  c.model.strides = 2
  # 'SAME' or an int (PyTorch-style symmetric padding); either type may be assigned.
  c.model.padding = ml_collections.FieldReference('SAME', field_type=object)
  c.model.output_kernel_size = 3  # the last decoder conv, stride 1, to the image channels
  c.model.resnet_blocks = 0  # ResNet blocks after each encoder and decoder stage
  c.model.hidden_dims = (128,)  # Dense layers between the conv features and the latent
  c.model.decoder_hidden_dims = ()  # Dense layers from the latent before the reshape
  c.model.skip_stages = 0  # decoder stages that add the matching encoder stage output
  c.model.anchor = 'none'  # a noise-mask module for the reparameterization (SAAAE)
  # SAAAE anchors (jvae/models/anchors.py): min-max over each example's anchor vector, or over the
  # whole batch as the source did; KL of every dimension ('full', the notebook) or weighted by the
  # noise mask ('noise_mask', the README's KL "decoupled from anchors").
  c.model.anchor_normalization = 'per_example'  # per_example | batch
  c.model.anchor_kl_weighting = 'full'  # full | noise_mask
  c.model.anchor_patch_size = 8  # patch_attention: side of the patch tokens
  c.model.anchor_embed_dim = 64  # patch_attention: width of the patch tokens
  c.model.anchor_attention_dim = 0  # query/key/value width; 0 = the token width
  c.model.anchor_noise_scale = 1.0  # constant_noise: the fixed noise mask (1 = a plain VAE)
  c.model.output_activation = 'sigmoid'  # sigmoid | tanh | none
  c.model.conditioning = 'none'  # none | onehot | embedding
  c.model.num_classes = 10
  c.model.label_embedding_dim = 8
  c.model.norm = 'none'  # none | batch
  c.model.dropout_rate = 0.0
  # native: flax/lax convolutions. fast: per layer, the fastest on XLA:CPU of native and the exact
  # reformulations (jvae/models/layers.py), for this CPU: the stride-1 convs of ResNet blocks run
  # native with AVX-512 and as patches without. fast_low_memory / fast_patches: fast with those
  # native / as patches on any CPU (native needs less than half the ResNet VAE step's memory:
  # layers.conv_fast_low_memory); the others force one form everywhere.
  c.model.conv_impl = 'fast'
  c.model.conv_transpose_impl = 'fast'
  c.model.dtype = 'float32'  # compute dtype: float32 | bfloat16 (parameters stay float32)

  c.loss = ml_collections.ConfigDict()
  c.loss.reconstruction = 'bernoulli'  # bernoulli | mse | l1 | gaussian
  c.loss.gaussian_sigma = 0.1  # fixed decoder std for the gaussian likelihood
  c.loss.beta = 1.0
  c.loss.beta_schedule = 'constant'  # constant | linear | cyclical
  c.loss.beta_warmup_steps = 1000
  c.loss.beta_cycles = 4
  c.loss.beta_cycle_ramp_fraction = 0.5
  c.loss.free_bits = 0.0  # nats per latent dimension (batch-averaged) below which KL is not pushed

  c.corruption = ml_collections.ConfigDict()
  c.corruption.kind = 'none'
  c.corruption.strength = 0.5

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # global, over all devices and hosts
  # jit: one jax.jit step partitioned by the argument shardings; BatchNorm sees the global batch.
  # shard_map: the loss and gradient per device under jax.shard_map, averaged with pmean;
  # BatchNorm uses each device's own batch statistics (see jvae/steps.py make_train_step).
  c.train.parallelism = 'jit'
  # Micro-batches per update: the batch is split into this many, run one after another within
  # the step, and their mean gradient applied once (BatchNorm then sees micro-batch statistics).
  c.train.grad_accumulation_steps = 1
  c.train.eval_batch_size = 256
  c.train.num_train_steps = 1000
  c.train.optimizer = 'adam'  # adam | adamw
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = 'constant'  # constant | cosine | warmup_cosine
  c.train.warmup_steps = 0
  c.train.weight_decay = 0.0
  c.train.grad_clip_norm = 1e3  # global-norm clipping; 0 disables
  # param_norm and update_norm in the train metrics (grad_norm is always there): two more passes
  # over every parameter per step, which XLA:CPU does not fuse into the update (6% of
  # restoration_cifar64_stage1's step on a 2-core CPU: 66.0 against 62.1 ms; BENCHMARKS.md).
  c.train.log_weight_norms = False
  # The PRNG every random draw of the run uses (a jax.random key implementation; jvae/prng.py
  # has what was measured on CPU: JAX's default is kept). A run resumes only under the one it
  # started with.
  c.train.prng_impl = 'threefry2x32'
  c.train.nan_policy = 'stop'  # stop | skip (a non-finite step leaves the state unchanged)
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 500
  c.train.checkpoint_every_steps = 500
  c.train.keep_checkpoints = 3
  c.train.best_metric = 'loss'  # an eval metric name; the best checkpoint is kept apart
  c.train.best_mode = 'min'  # min | max
  # Stop when `best_metric` has not improved for this many evals (0: never stop early).
  c.train.early_stopping_patience = 0
  # A run directory whose checkpoint initialises the parameters (and BatchNorm statistics) of a
  # NEW run at step 0 with a fresh optimizer: stage 2 of two-stage training. '' = random init.
  c.train.init_from = ''
  c.train.init_from_checkpoint = 'best'  # best | latest
  c.train.stage = ''  # a label recorded in the logs and run_info.json, e.g. 'stage2'
  c.train.eval_max_batches = 0  # 0 = the whole eval split
  c.train.num_figure_images = 16
  # Posterior collapse. A latent dimension is active when the variance over inputs of its
  # posterior mean exceeds `active_unit_threshold` (Burda et al. 2016); eval counts them over the
  # split, and every training step estimates the count on its own batch. When the active fraction
  # of the latent falls below `collapse_warning_fraction` (0: never), the training log warns at
  # the step it happens, and again if it recovers and falls once more.
  c.train.active_unit_threshold = 0.01
  c.train.collapse_warning_fraction = 0.1
  c.train.progress_bar = True  # a tqdm bar, shown only on a terminal or in a notebook
  # full: XLA's optimizing compile for the train and eval steps. minimal: about 3x faster to
  # compile and slower to run, for tests and smoke runs of a few steps.
  c.train.xla_optimization = 'full'
  # Which kernels XLA:CPU runs lax convolutions with (the 'native' conv forms, the ResNet
  # blocks' stride-1 convs and every convolution's gradients there): 'ynnpack' (XLA's default
  # library fusions) or 'eigen' (YNNPACK's convolution fusions off: XLA's own kernels). 'auto':
  # eigen on Intel CPUs, where YNNPACK's took twice the time (BENCHMARKS.md, thirteenth session),
  # ynnpack elsewhere. Only read on the CPU backend.
  c.train.cpu_conv_kernels = 'auto'
  # A directory for JAX's persistent compilation cache ('' = off). A rerun or resumed run then
  # loads its compiled steps: no compile time, and none of the compiler's transient memory,
  # which sets the process's peak on CPU for small models (BENCHMARKS.md).
  c.train.compilation_cache_dir = ''
  # Each XLA:CPU step's temporaries reuse the previous step's resident memory instead of fresh
  # pages from the kernel (`jvae.host_memory.reuse_step_buffers`: synchronous single-device
  # dispatch, glibc keeping freed memory). Process-wide; takes effect only when the process has
  # not run JAX yet, as in train.py. False: JAX's and glibc's defaults.
  c.train.reuse_step_buffers = True
  # Every this many steps (0: never; it also runs after the first step and each evaluation) the
  # allocator's free pages go back to the OS (`jvae.host_memory.release_freed_memory`). Memory
  # that glibc keeps for reuse can fragment: a step's large buffer that no longer fits its old
  # hole takes new pages while the hole stays resident; trimming returns the hole, at the cost
  # of the step buffer's page faults once.
  c.train.release_memory_every_steps = 100
  # The train and eval steps are compiled ahead of time for their first batch; after each
  # compile JAX's tracing and compile caches are cleared (`jvae.compiled_step`), so the steps'
  # jaxprs and MLIR modules (~19 MB on configs/default.py, ~25 MB on the larger configs) do not
  # stay resident for the run. Other jitted functions recompile once when next called.
  c.train.shed_compiler_memory = True

  # Multi-host: jax.distributed.initialize before anything else. Empty fields are detected from
  # the cluster's environment (SLURM, Kubernetes, TPU pods, ...) by JAX itself.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False
  c.distributed.coordinator_address = ''  # host:port of process 0
  c.distributed.num_processes = 0  # 0 = from the environment
  c.distributed.process_id = -1  # -1 = from the environment
  c.distributed.cpu_collectives = 'gloo'  # cross-process collectives on CPU: gloo | mpi
  return c


# Allowed values of enumerated fields. Keys are dotted field paths.
CHOICES: dict[str, tuple[Any, ...]] = {
    'task': ('reconstruct', 'denoise'),
    'data.value_range': ('unit', 'symmetric'),
    'data.binarize': ('none', 'dynamic'),
    'data.channels': (0, 1, 3),
    'data.on_bad_image': ('skip', 'error'),
    'model.kind': ('vae', 'ae'),
    'model.encoder': ('conv', 'mlp'),
    'model.decoder': ('conv', 'mlp'),
    'model.activation': ('relu', 'silu', 'gelu', 'leaky_relu', 'tanh'),
    'model.output_activation': ('sigmoid', 'tanh', 'none'),
    'model.conditioning': ('none', 'onehot', 'embedding'),
    'model.norm': ('none', 'batch'),
    'model.anchor_normalization': ('per_example', 'batch'),
    'model.anchor_kl_weighting': ('full', 'noise_mask'),
    'model.conv_impl': ('native', 'fast', 'fast_low_memory', 'fast_patches', 'patches',
                        'shifted'),
    'model.conv_transpose_impl': ('native', 'fast', 'fast_low_memory', 'fused', 'phases',
                                  'shared', 'scatter'),
    'model.dtype': ('float32', 'bfloat16'),
    'loss.reconstruction': ('bernoulli', 'mse', 'l1', 'gaussian'),
    'loss.beta_schedule': ('constant', 'linear', 'cyclical'),
    'train.optimizer': ('adam', 'adamw'),
    'train.lr_schedule': ('constant', 'cosine', 'warmup_cosine'),
    'train.nan_policy': ('stop', 'skip'),
    'train.prng_impl': ('threefry2x32', 'threefry4x32', 'philox2x32', 'philox4x32', 'rbg',
                        'unsafe_rbg'),
    'train.parallelism': ('jit', 'shard_map'),
    'train.best_mode': ('min', 'max'),
    'train.xla_optimization': ('full', 'minimal'),
    'train.cpu_conv_kernels': ('auto', 'ynnpack', 'eigen'),
    'train.init_from_checkpoint': ('best', 'latest'),
    'distributed.cpu_collectives': ('gloo', 'mpi'),
}

# Inclusive numeric bounds; None leaves a side open.
RANGES: dict[str, tuple[float | None, float | None]] = {
    'seed': (0, None),  # keys numpy's epoch permutations as well as JAX's keys
    'data.image_size': (0, 4096),
    'data.holdout_fraction': (0.0, 0.9),
    'data.num_workers': (0, 256),
    'data.prefetch_threads': (0, 256),
    'data.device_prefetch': (0, 64),
    'data.speckle_num_train': (1, None),
    'data.speckle_num_eval': (1, None),
    'data.speckle_pupil_fraction': (0.01, 0.5),
    'model.latent_dim': (1, None),
    'model.kernel_size': (1, 31),
    'model.strides': (1, 8),
    'model.output_kernel_size': (1, 31),
    'model.resnet_blocks': (0, 64),
    'model.skip_stages': (0, 16),
    'model.num_classes': (1, None),
    'model.label_embedding_dim': (1, None),
    'model.dropout_rate': (0.0, 0.99),
    'model.anchor_patch_size': (1, 4096),
    'model.anchor_embed_dim': (1, None),
    'model.anchor_attention_dim': (0, None),
    'model.anchor_noise_scale': (0.0, 1.0),
    'loss.gaussian_sigma': (1e-6, None),
    'loss.beta': (0.0, None),
    'loss.beta_warmup_steps': (0, None),
    'loss.beta_cycles': (1, None),
    'loss.beta_cycle_ramp_fraction': (0.0, 1.0),
    'loss.free_bits': (0.0, None),
    'corruption.strength': (0.0, None),
    'train.batch_size': (1, None),
    'train.grad_accumulation_steps': (1, None),
    'train.eval_batch_size': (1, None),
    'train.num_train_steps': (1, None),
    'train.learning_rate': (0.0, None),
    'train.warmup_steps': (0, None),
    'train.weight_decay': (0.0, None),
    'train.grad_clip_norm': (0.0, None),
    'train.log_every_steps': (1, None),
    'train.release_memory_every_steps': (0, None),
    'train.eval_every_steps': (1, None),
    'train.checkpoint_every_steps': (1, None),
    'train.keep_checkpoints': (1, None),
    'train.eval_max_batches': (0, None),
    'train.early_stopping_patience': (0, None),
    'distributed.num_processes': (0, None),
    'distributed.process_id': (-1, None),
    'train.num_figure_images': (1, 1024),
    'train.active_unit_threshold': (0.0, None),
    'train.collapse_warning_fraction': (0.0, 1.0),
}

SOURCE_KINDS = ('tfds', 'npz', 'folder', 'pairs', 'builtin')
BUILTIN_SOURCES = ('digits', 'speckle')
# Registries that grow with the systems add their names here (see jvae/corruptions.py).
EXTRA_CHOICES: dict[str, list[str]] = {'corruption.kind': ['none'], 'model.anchor': ['none']}


def _flatten(cfg: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in cfg.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def _type_ok(value: Any, reference: Any) -> bool:
  if isinstance(reference, bool):
    return isinstance(value, bool)
  if isinstance(reference, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(reference, str):
    return isinstance(value, str)
  if isinstance(reference, (tuple, list)):
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
  return True


def _type_name(reference: Any) -> str:
  if isinstance(reference, (tuple, list)):
    return 'a tuple of positive ints'
  return type(reference).__name__


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises ConfigError naming the first bad field; returns None for a usable config.

  Args:
    config: a config built on `base_config()`.
    num_devices: devices the global batch is split over (`jax.device_count()`).
  """
  reference = _flatten(base_config())
  values = _flatten(config)
  for path, value in values.items():
    if path not in reference:
      parent = path.rsplit('.', 1)[0] if '.' in path else ''
      siblings = sorted(p for p in reference if p.rsplit('.', 1)[0] == parent and '.' in p) \
          if parent else sorted(p for p in reference if '.' not in p)
      raise ConfigError(
          f'unknown config field {path!r}; fields allowed here: {", ".join(siblings)}')
    ref = reference[path]
    if path == 'model.padding':
      if not (value == 'SAME' or (isinstance(value, int) and not isinstance(value, bool)
                                  and value >= 0)):
        raise ConfigError(f"config field 'model.padding' is {value!r}; allowed: 'SAME' or an "
                          'int >= 0 (PyTorch-style symmetric padding)')
      continue
    if path in ('model.decoder_features', 'model.decoder_hidden_dims', 'model.hidden_dims') \
        and value == ():
      continue
    if path == 'data.exclude_labels':
      if not (isinstance(value, (tuple, list)) and all(
          isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ConfigError(f"config field 'data.exclude_labels' is {value!r}; allowed: a tuple "
                          'of class ids >= 0, e.g. (3,), or () for all classes')
      continue
    if not _type_ok(value, ref):
      raise ConfigError(f'config field {path!r} is {value!r} ({type(value).__name__}); '
                        f'expected {_type_name(ref)}')
  for path, allowed in {**CHOICES, **EXTRA_CHOICES}.items():
    if path in values and values[path] not in allowed:
      raise ConfigError(f'config field {path!r} is {values[path]!r}; allowed: '
                        f'{", ".join(map(repr, allowed))}')
  for path, (low, high) in RANGES.items():
    value = values.get(path)
    if value is None:
      continue
    if (low is not None and value < low) or (high is not None and value > high):
      bounds = f'[{low}, {"inf" if high is None else high}]'
      raise ConfigError(f'config field {path!r} is {value!r}; allowed range {bounds}')
  _validate_source(config.data.source)
  _validate_combinations(config, num_devices)


def _validate_source(source: str) -> None:
  kind, _, rest = source.partition(':')
  if kind not in SOURCE_KINDS or not rest:
    raise ConfigError(
        f"config field 'data.source' is {source!r}; allowed: tfds:<name>, npz:<path>, "
        f'folder:<path>, builtin:{"|".join(BUILTIN_SOURCES)}, pairs:<distorted_dir>,<clear_dir>')
  if kind == 'builtin' and rest not in BUILTIN_SOURCES:
    raise ConfigError(f"config field 'data.source' names unknown built-in {rest!r}; "
                      f'allowed: {", ".join("builtin:" + b for b in BUILTIN_SOURCES)}')


def _validate_combinations(config: ml_collections.ConfigDict, num_devices: int) -> None:
  train = config.train
  if train.batch_size % num_devices:
    raise ConfigError(f"config field 'train.batch_size' is {train.batch_size}, which does not "
                      f'divide over {num_devices} devices; use a multiple of {num_devices}')
  micro_batches = train.grad_accumulation_steps * num_devices
  if train.batch_size % micro_batches:
    raise ConfigError(
        f"config field 'train.batch_size' is {train.batch_size}, which does not split into "
        f'train.grad_accumulation_steps={train.grad_accumulation_steps} equal micro-batches over '
        f'{num_devices} device(s); use a multiple of {micro_batches} (accumulation steps x '
        'devices) or change train.grad_accumulation_steps')
  if train.eval_batch_size % num_devices:
    raise ConfigError(f"config field 'train.eval_batch_size' is {train.eval_batch_size}, which "
                      f'does not divide over {num_devices} devices; use a multiple of '
                      f'{num_devices}')
  if config.loss.reconstruction == 'bernoulli' and config.model.output_activation != 'sigmoid':
    raise ConfigError("config field 'model.output_activation' must be 'sigmoid' with "
                      "loss.reconstruction='bernoulli' (the loss reads the logits before it)")
  if config.loss.reconstruction == 'bernoulli' and config.data.value_range != 'unit':
    raise ConfigError("config field 'data.value_range' must be 'unit' with "
                      "loss.reconstruction='bernoulli' (targets are probabilities in [0, 1])")
  if config.data.binarize != 'none' and config.data.value_range != 'unit':
    raise ConfigError("config field 'data.binarize' needs data.value_range='unit'")
  if config.model.output_activation == 'tanh' and config.data.value_range != 'symmetric':
    raise ConfigError("config field 'model.output_activation' is 'tanh' but "
                      "data.value_range is 'unit'; use value_range='symmetric' or sigmoid")
  if config.model.output_activation == 'sigmoid' and config.data.value_range != 'unit':
    raise ConfigError("config field 'model.output_activation' is 'sigmoid' but "
                      "data.value_range is 'symmetric'; use value_range='unit' or tanh")
  if config.task == 'denoise' and config.corruption.kind == 'none':
    raise ConfigError("config field 'corruption.kind' is 'none' but task='denoise' needs a "
                      f'corruption; allowed: {", ".join(EXTRA_CHOICES["corruption.kind"][1:])}')
  if config.model.kind == 'ae' and config.loss.beta_schedule != 'constant':
    raise ConfigError("config field 'loss.beta_schedule' applies to model.kind='vae' only")
  if config.model.conditioning != 'none' and config.model.num_classes < 2:
    raise ConfigError("config field 'model.num_classes' must be >= 2 with conditioning")


def describe_fields() -> str:
  """One line per field with its default, for `--helpfull`-style listings."""
  return '\n'.join(f'{k} = {v!r}' for k, v in _flatten(base_config()).items())
