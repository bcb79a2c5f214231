"""S6 stage 2: fine-tune the stage-1 restoration VAE on (distorted -> clear) pairs, CIFAR-64.

COMMAND: python train.py --config configs/restoration_cifar64_stage2.py \
    --workdir runs/restoration_cifar64_stage2
RESULT: see RESULTS.md (S6)

Starts from the stage-1 run's checkpoint (train.init_from; run configs/restoration_cifar64_stage1.py
into runs/restoration_cifar64_stage1 first) with a fresh optimizer, its own learning rate and step
budget. The pairs are made on the fly inside the compiled step: each clear image gets one of
blur, Gaussian noise, fading, pixelation or scratches (corruption.kind='restoration_mix'), drawn
from the step's key. The same model as stage 1, which the checkpoint must fit.

Stage 2 alone from scratch, the control: the same command with `--config.train.init_from=`
(empty) and another workdir. A run stopped mid-stage resumes from its own checkpoints (init_from
is read only when the workdir has none).
"""

import pathlib
import runpy


def get_config():
  stage1 = runpy.run_path(str(pathlib.Path(__file__).with_name('restoration_cifar64_stage1.py')))
  config = stage1['get_config']()
  config.task = 'denoise'
  config.corruption.kind = 'restoration_mix'
  config.corruption.strength = 0.5
  # Half the stage-1 rate: the first updates on the new task should adjust, not overwrite, what
  # stage 1 learnt.
  config.train.learning_rate = 5e-4
  config.train.init_from = 'runs/restoration_cifar64_stage1'  # relative to the repo root
  config.train.init_from_checkpoint = 'latest'
  config.train.stage = 'stage2'
  config.train.num_train_steps = 250
  config.train.checkpoint_every_steps = 125
  return config
