"""A tiny CPU config for tests and smoke runs: a conv VAE on the bundled 8x8 digits that
compiles in about a second and trains 12 steps.

COMMAND: python train.py --config configs/test.py --workdir /tmp/jvae_test
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'builtin:digits'
  config.data.channels = 1
  config.data.prefetch_threads = 1
  config.model.latent_dim = 4
  config.model.encoder_features = (8, 16)
  config.model.hidden_dims = (32,)
  config.train.batch_size = 16
  config.train.eval_batch_size = 64
  config.train.num_train_steps = 12
  config.train.log_every_steps = 1
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 4
  config.train.num_figure_images = 4
  config.train.progress_bar = False
  config.train.xla_optimization = 'minimal'
  return config
