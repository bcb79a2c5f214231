"""S2 on MNIST: the ResNet conv VAE of configs/resnet_vae_fashion_mnist.py on 32x32 digits.

COMMAND: python train.py --config configs/resnet_vae_mnist.py --workdir runs/resnet_vae_mnist
RESULT: not run here; the beta sweep measured on 2 CPU cores is on Fashion-MNIST (RESULTS.md S2,
configs/resnet_vae_fashion_mnist_beta_sweep.py).

configs/resnet_vae_fashion_mnist.py (the speckle config's network, loss, clipping and lr 1e-4 at
32x32) on `../shared/data/mnist.npz` (60000 training, 10000 held-out digits).
"""

import pathlib
import runpy


def get_config():
  fashion = runpy.run_path(str(pathlib.Path(__file__).with_name('resnet_vae_fashion_mnist.py')))
  config = fashion['get_config']()
  # Relative to the repo root, where train.py runs.
  config.data.source = 'npz:../shared/data/mnist.npz'
  return config
