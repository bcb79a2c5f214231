"""S2 on Fashion-MNIST: the ResNet conv VAE of configs/resnet_vae_speckle.py on 32x32 clothing.

COMMAND: python train.py --config configs/resnet_vae_fashion_mnist.py \\
           --workdir runs/resnet_vae_fashion_mnist
RESULT: see RESULTS.md (S2) for the beta sweep measured on 2 CPU cores
(configs/resnet_vae_fashion_mnist_beta_sweep.py).

The same network, loss (summed squared error + beta * KL), gradient clipping and lr 1e-4 as the
speckle config, on `../shared/data/fashion_mnist.npz` (60000 training, 10000 held-out images)
resized 28 -> 32 so that the four stride-2 stages divide it (32 -> 2 -> 32).
"""

import pathlib
import runpy


def get_config():
  speckle = runpy.run_path(str(pathlib.Path(__file__).with_name('resnet_vae_speckle.py')))
  config = speckle['get_config']()
  # Relative to the repo root, where train.py runs.
  config.data.source = 'npz:../shared/data/fashion_mnist.npz'
  config.data.image_size = 32
  config.data.channels = 1
  config.train.num_train_steps = 10000
  config.train.eval_every_steps = 2000
  config.train.checkpoint_every_steps = 1000
  return config
