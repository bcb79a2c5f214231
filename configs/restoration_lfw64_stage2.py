"""S6 stage 2: fine-tune the stage-1 restoration VAE on (distorted -> clear) faces, LFW-64 gray.

COMMAND: python train.py --config configs/restoration_lfw64_stage2.py \
    --workdir runs/restoration_lfw64_stage2
RESULT: see RESULTS.md (S6)

Starts from the stage-1 run's checkpoint (train.init_from; run configs/restoration_lfw64_stage1.py
into runs/restoration_lfw64_stage1 first) with a fresh optimizer, its own learning rate and step
budget. Each clear face gets one of blur, Gaussian noise, fading, pixelation or scratches inside
the compiled step (corruption.kind='restoration_mix'). Stage 2 alone from scratch, the control:
the same command with `--config.train.init_from=` (empty) and another workdir.
"""

import pathlib
import runpy


def get_config():
  cifar = runpy.run_path(str(pathlib.Path(__file__).with_name('restoration_cifar64_stage2.py')))
  config = cifar['get_config']()  # the same model and stage-2 schedule, on faces
  config.data.source = 'npz:../shared/data/lfw_gray64_subset.npz'  # relative to the repo root
  config.data.channels = 1
  config.train.init_from = 'runs/restoration_lfw64_stage1'  # relative to the repo root
  return config
