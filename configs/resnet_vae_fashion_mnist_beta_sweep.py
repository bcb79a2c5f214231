"""S2: the beta sweep of the ResNet conv VAE on Fashion-MNIST: the rate-distortion trade-off.

COMMAND:
  python -m jvae.sweep --config configs/resnet_vae_fashion_mnist_beta_sweep.py \\
      --workdir runs/beta_sweep_fashion
RESULT: see RESULTS.md (S2) for the short sweep measured on 2 CPU cores.

Each point trains configs/resnet_vae_fashion_mnist.py with one beta (the betas of
configs/resnet_vae_speckle_beta_sweep.py) into <workdir>/loss.beta=<value>; the runner then writes
sweep.csv, sweep.md and rate_distortion.png (see that file).
"""

import pathlib
import runpy

_HERE = pathlib.Path(__file__)
BETAS = runpy.run_path(str(_HERE.with_name('resnet_vae_speckle_beta_sweep.py')))['BETAS']


def get_config():
  base = runpy.run_path(str(_HERE.with_name('resnet_vae_fashion_mnist.py')))
  return base['get_config']()


def sweep(add):
  for beta in BETAS:
    add(**{'loss.beta': beta})
