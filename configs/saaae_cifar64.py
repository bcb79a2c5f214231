"""S1 offline twin: SAAAE on the CIFAR-10 subset beside the repository, resized to 64x64.

COMMAND: python train.py --config configs/saaae_cifar64.py --workdir runs/saaae_cifar64
RESULT: see RESULTS.md (S1) for the short runs measured on 2 CPU cores.

Everything as configs/saaae_stl10.py (model, masking, loss; its docstring lists the options),
on 10000 CIFAR-10 training images upsampled 32 -> 64 and its 2000 held-out test images.
"""

import pathlib
import runpy


def get_config():
  stl10 = runpy.run_path(str(pathlib.Path(__file__).with_name('saaae_stl10.py')))
  config = stl10['get_config']()
  # Relative to the repo root, where train.py runs.
  config.data.source = 'npz:../shared/data/cifar10_32_subset.npz'
  config.data.image_size = 64
  config.data.channels = 3
  config.data.value_range = 'symmetric'
  return config
