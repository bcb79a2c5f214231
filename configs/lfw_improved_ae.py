"""S5 Part 4: the improved conv autoencoder on LFW faces: deeper, BatchNorm and Dropout, latent 256.

COMMAND: python train.py --config configs/lfw_improved_ae.py --workdir runs/lfw_improved_ae
RESULT: see RESULTS.md (S5)

The source's ImprovedCAE in PyTorch terms: four Conv2d(k3, s2, p1) stages 1->32->64->128->256
(64 -> 4 px), each Conv -> BatchNorm2d -> ReLU -> element-wise Dropout, flatten 4*4*256, Linear
to the 256-D code; Linear back to 4*4*256, ReLU, ConvTranspose2d(k3, s2, p1, output_padding 1)
256->128->64->32 each with BatchNorm, ReLU and dropout, then 32->1 and a sigmoid. BatchNorm uses
batch statistics (of the global batch, across devices) in training and running averages in eval.
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
  config.model.encoder_features = (32, 64, 128, 256)
  config.model.decoder_features = (256, 128, 64, 32)
  config.model.kernel_size = 3
  config.model.strides = 2
  config.model.padding = 1
  config.model.hidden_dims = ()
  config.model.norm = 'batch'
  config.model.dropout_rate = 0.1
  config.loss.reconstruction = 'mse'
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.num_train_steps = 400
  config.train.eval_every_steps = 200
  config.train.checkpoint_every_steps = 200
  # Patch matmuls keep their inputs, not their patch buffers, for the backward pass: less step
  # memory for slightly longer steps (BENCHMARKS.md, twelfth session).
  config.model.conv_impl = 'fast_low_memory'
  config.model.conv_transpose_impl = 'fast_low_memory'
  return config
