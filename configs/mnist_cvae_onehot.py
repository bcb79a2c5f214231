"""S3: the one-hot conditional VAE of the Keras MNIST source, latent 2, 10 epochs.

Encoder Conv(32, 3x3, s2) ReLU, Conv(64, 3x3, s2) ReLU, flatten (3136) + one-hot(10), Dense 128
ReLU, mu/logvar (2); decoder z + one-hot, Dense 3136 ReLU, 7x7x64, ConvT(64, s2) ReLU, ConvT(32,
s2) ReLU, a stride-1 3x3 output conv to 1 channel, sigmoid. BCE summed over pixels + KL, Adam 1e-3,
batch 128: 10 epochs of 60000 images = 4690 steps.

COMMAND: python train.py --config configs/mnist_cvae_onehot.py --workdir runs/mnist_cvae_onehot
RESULT: see RESULTS.md (S3)

Data: the offline MNIST copy beside the repository (paths are relative to the repo root, where
train.py runs); on a connected machine `--config.data.source=tfds:mnist` reads the same data.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/mnist.npz'
  config.data.channels = 1
  config.model.latent_dim = 2
  config.model.conditioning = 'onehot'
  config.model.encoder_features = (32, 64)
  config.model.hidden_dims = (128,)
  config.train.batch_size = 128
  config.train.num_train_steps = 4690
  config.train.learning_rate = 1e-3
  # One epoch is 469 steps.
  config.train.eval_every_steps = 938
  config.train.checkpoint_every_steps = 469
  # Patch matmuls keep their inputs, not their patch buffers, for the backward pass: less step
  # memory for slightly longer steps (BENCHMARKS.md, twelfth session).
  config.model.conv_impl = 'fast_low_memory'
  config.model.conv_transpose_impl = 'fast_low_memory'
  return config
