"""S5 Part 3: a denoising conv autoencoder on LFW faces: noisy input, clean target, latent 256.

COMMAND: python train.py --config configs/lfw_dae.py --workdir runs/lfw_dae
RESULT: see RESULTS.md (S5)

The Part 2 conv autoencoder trained on x + noise_factor * N(0, 1), clipped to [0, 1] (the
corruption is drawn inside the compiled step from the step's own key), against the clean x. The
eval reports the noisy input's psnr/ssim (`input_psnr`, `input_ssim`) beside the output's.
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
  config.task = 'denoise'
  config.corruption.kind = 'gaussian_noise'
  config.corruption.strength = 0.3  # the source's noise_factor, on [0, 1] images
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
  config.train.num_train_steps = 800
  config.train.eval_every_steps = 400
  config.train.checkpoint_every_steps = 400
  return config
