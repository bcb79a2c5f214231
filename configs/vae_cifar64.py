"""S1 baseline: the plain VAE of the SAAAE comparison (same backbone, masking and loss, no anchor).

COMMAND: python train.py --config configs/vae_cifar64.py --workdir runs/vae_cifar64
RESULT: see RESULTS.md (S1); the source reports VAE "MSE" 58.98 against SAAAE's 34.11.

configs/saaae_cifar64.py with model.anchor='none': z = mu + std * eps.
"""

import pathlib
import runpy


def get_config():
  cifar64 = runpy.run_path(str(pathlib.Path(__file__).with_name('saaae_cifar64.py')))
  config = cifar64['get_config']()
  config.model.anchor = 'none'
  return config
