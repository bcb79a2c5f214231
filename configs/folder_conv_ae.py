"""The S5 conv autoencoder on any ImageFolder-style directory of images, resized to 64x64 RGB.

COMMAND: python train.py --config configs/folder_conv_ae.py --workdir runs/folder_conv_ae \
  --config.data.source=folder:/my/images
RESULT: none recorded (the placeholder path below must be replaced by your folder).

The folder may hold train/, val/ and test/ subfolders (each optionally with class subfolders,
which become labels), or just images (a `data.holdout_fraction` is then held out by seed). Files
that cannot be decoded are skipped and reported. `--config.data.channels=1` trains on grayscale.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'folder:/path/to/images'  # a placeholder: override it on the command line
  config.data.image_size = 64
  config.data.channels = 3
  config.data.prefetch_threads = 2  # files are decoded on every read
  config.model.kind = 'ae'
  config.model.latent_dim = 256
  config.model.encoder_features = (32, 64, 128)
  config.model.decoder_features = (128, 64, 32)
  config.model.kernel_size = 3
  config.model.strides = 2
  config.model.padding = 1
  config.model.hidden_dims = ()
  config.loss.reconstruction = 'mse'
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.num_train_steps = 3000
  config.train.eval_every_steps = 1500
  config.train.checkpoint_every_steps = 1500
  return config
