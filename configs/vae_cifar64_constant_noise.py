"""S1 ablation: the plain VAE of configs/vae_cifar64.py, its sampling noise scaled by a constant.

COMMAND: python train.py --config configs/vae_cifar64_constant_noise.py \\
           --workdir runs/vae_cifar64_constant_noise --config.model.anchor_noise_scale=<m>
RESULT: see RESULTS.md (S1).

z = mu + std * eps * m for every image and dimension, with m = `model.anchor_noise_scale` set to
the mean noise mask (1 - a_norm) of a trained SAAAE on the same data (`jvae.evaluate` reports it
as `noise_mask_mean`). If SAAAE's gain were only from injecting less noise, this model would match
it; what is left is the anchor's per-image, per-dimension choice of where to put the noise.
"""

import pathlib
import runpy


def get_config():
  vae = runpy.run_path(str(pathlib.Path(__file__).with_name('vae_cifar64.py')))
  config = vae['get_config']()
  config.model.anchor = 'constant_noise'
  config.model.anchor_noise_scale = 0.5
  return config
