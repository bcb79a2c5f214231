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

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/lfw_gray64_subset.npz'
  config.data.image_size = 64
  config.data.channels = 1
  config.task = 'denoise'
  config.corruption.kind = 'restoration_mix'
  config.corruption.strength = 0.5
  config.model.kind = 'vae'
  config.model.latent_dim = 128
  config.model.encoder_features = (32, 64, 128, 256)
  config.model.decoder_features = (256, 128, 64, 32)
  config.model.kernel_size = 4
  config.model.strides = 2
  config.model.padding = 1
  config.model.hidden_dims = (512,)
  config.model.decoder_hidden_dims = (512,)
  config.model.skip_stages = 3
  config.model.output_activation = 'sigmoid'
  config.loss.reconstruction = 'bernoulli'
  config.loss.beta = 1.0
  # Short CPU runs (see RESULTS.md); the source trains for many epochs.
  config.train.batch_size = 32
  # Half the stage-1 rate: the first updates on the new task should adjust, not overwrite, what
  # stage 1 learnt.
  config.train.learning_rate = 5e-4
  config.train.init_from = 'runs/restoration_lfw64_stage1'  # relative to the repo root
  config.train.init_from_checkpoint = 'latest'
  config.train.stage = 'stage2'
  config.train.num_train_steps = 250
  config.train.eval_every_steps = 1000  # only the final eval
  config.train.checkpoint_every_steps = 125
  return config
