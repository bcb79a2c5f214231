"""S5 Part 2: a convolutional autoencoder on LFW faces (64x64 grayscale), latent 256, MSE.

COMMAND: python train.py --config configs/lfw_conv_ae.py --workdir runs/lfw_conv_ae
RESULT: see RESULTS.md (S5)

The source's ConvAutoencoder in PyTorch terms: Conv2d(k3, s2, p1) 1->32->64->128 with ReLU
(64 -> 8 px), flatten 8*8*128, Linear to the 256-D code; Linear back to 8*8*128, ReLU,
ConvTranspose2d(k3, s2, p1, output_padding 1) 128->64->32->1 with ReLU between, sigmoid out.
`--config.loss.reconstruction=l1` trains with MAE instead.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  # The offline copy (relative to the repo root, where train.py runs); on a connected machine
  # `--config.data.source=tfds:lfw --config.data.train_split='train[:85%]'
  # --config.data.eval_split='train[85%:]'` reads TFDS's lfw (one split, 250x250 RGB, uncropped).
  config.data.source = 'npz:../shared/data/lfw_gray64_subset.npz'
  config.data.image_size = 64
  config.data.channels = 1
  config.model.kind = 'ae'
  config.model.latent_dim = 256
  config.model.encoder_features = (32, 64, 128)
  # As many entries as stages: the last transposed conv outputs the image (no extra output conv).
  config.model.decoder_features = (128, 64, 32)
  config.model.kernel_size = 3
  config.model.strides = 2
  config.model.padding = 1
  config.model.hidden_dims = ()  # the code head reads the flattened 8x8x128 features directly
  config.loss.reconstruction = 'mse'
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.num_train_steps = 800
  config.train.eval_every_steps = 400
  config.train.checkpoint_every_steps = 400
  return config
