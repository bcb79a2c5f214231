"""S6 stage 1: the restoration VAE with skip connections learns clear faces (x -> x), LFW-64 gray.

COMMAND: python train.py --config configs/restoration_lfw64_stage1.py \
    --workdir runs/restoration_lfw64_stage1
RESULT: see RESULTS.md (S6)

SPEC S6's model at 64x64x1 (`restoration_cifar64_stage1.py` has the layout; only the image
channels differ): encoder Conv 4x4 s2 p1 1->32->64->128->256, Dense 256*4*4 -> 512 -> latent 128,
decoder Dense 128 -> 512 -> 256*4*4, ConvT 256->128->64->32->1 with the encoder maps added after
the first three, sigmoid; BCE summed + beta * KL, Adam 1e-3. Stage 2 is
`restoration_lfw64_stage2.py`.

Data: the offline LFW subset (5000 train / 1000 test, 64x64 grayscale, identities overlap between
the splits), relative to the repo root.
"""

import pathlib
import runpy


def get_config():
  cifar = runpy.run_path(str(pathlib.Path(__file__).with_name('restoration_cifar64_stage1.py')))
  config = cifar['get_config']()  # the same model and schedule, on faces
  config.data.source = 'npz:../shared/data/lfw_gray64_subset.npz'  # relative to the repo root
  config.data.channels = 1
  return config
