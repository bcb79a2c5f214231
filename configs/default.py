"""The default job: a conv VAE on scikit-learn's bundled 8x8 digits (no download), upsampled to
16x16. Bernoulli likelihood, latent 8.

COMMAND: python train.py --config configs/default.py --workdir runs/default
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'builtin:digits'
  config.data.image_size = 16
  config.data.channels = 1
  config.model.latent_dim = 8
  config.model.encoder_features = (32, 64)
  config.model.hidden_dims = (128,)
  config.train.batch_size = 64
  config.train.num_train_steps = 2000
  config.train.learning_rate = 2e-3
  config.train.lr_schedule = 'cosine'
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  return config
