"""S5 Part 1: an MLP autoencoder on LFW faces (64x64 grayscale), latent 256, MSE.

COMMAND: python train.py --config configs/lfw_mlp_ae.py --workdir runs/lfw_mlp_ae
RESULT: see RESULTS.md (S5)

Flatten 4096 -> Dense 1024 -> Dense 512 -> code 256 -> Dense 512 -> Dense 1024 -> Dense 4096,
ReLU, sigmoid out: the baseline of the source's Part 1, with the conv AEs' latent size so the four
parts compare at one code size. `--config.loss.reconstruction=l1` trains with MAE instead.
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
  config.model.encoder = 'mlp'
  config.model.decoder = 'mlp'
  config.model.hidden_dims = (1024, 512)  # the decoder mirrors them
  config.model.latent_dim = 256
  config.loss.reconstruction = 'mse'
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.num_train_steps = 1500
  config.train.eval_every_steps = 750
  config.train.checkpoint_every_steps = 750
  return config
