"""S6: the restoration VAE with encoder-decoder skip connections, at the source's 128x128x3.

COMMAND: python train.py --config configs/restoration_vae.py:stage1 \
    --workdir runs/restoration_vae_stage1 --config.data.source=folder:data/restoration/clear \
  && python train.py --config configs/restoration_vae.py:stage2 \
    --workdir runs/restoration_vae_stage2 \
    --config.data.source=pairs:data/restoration/distorted,data/restoration/clear
RESULT: not run (no offline copy of the source's paired art images); the 64x64 configs
restoration_{cifar64,lfw64}_stage{1,2}.py were measured instead, see RESULTS.md.

The model of seeds/004 (SPEC S6): encoder Conv 4x4 s2 p1 3->32->64->128->256 ReLU (128 -> 8 px),
Dense 256*8*8 -> 512 ReLU -> mu/logvar (128); decoder Dense 128 -> 512 -> 256*8*8 (ReLU), ConvT
4x4 s2 p1 256->128->64->32->3, the matching encoder feature map ADDED after each of the first
three ConvT, then ReLU; sigmoid out. BCE summed over pixels + beta * KL, Adam 1e-3.

Two stages (`:stage1` or `:stage2` after the file name; stage2 is the default):
- stage1 learns clear images, x -> x. `data.source` is a folder of clear images.
- stage2 fine-tunes stage 1's checkpoint (train.init_from) on (distorted -> clear) pairs:
  `pairs:<distorted_dir>,<clear_dir>` matches files by name (train/ and test/ subfolders in both,
  or a held-out fraction by seed). With a folder of clear images instead, add
  `--config.task=denoise --config.corruption.kind=restoration_mix` to make the pairs on the fly.
The data paths above are placeholders: the source's Kaggle "art images clear and distorted" set
has no offline copy here.
"""

from jvae.config import base_config


def get_config(stage: str = 'stage2'):
  if stage not in ('stage1', 'stage2'):
    raise ValueError(f"configs/restoration_vae.py takes ':stage1' or ':stage2', not {stage!r}")
  config = base_config()
  config.data.image_size = 128
  config.data.channels = 3
  config.model.kind = 'vae'
  config.model.latent_dim = 128
  config.model.encoder_features = (32, 64, 128, 256)
  # One entry per stage: the first is the reshape's channels, the last ConvT outputs the image.
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
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.num_train_steps = 5000
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 500
  config.train.stage = stage
  if stage == 'stage1':
    config.data.source = 'folder:data/restoration/clear'
  else:
    config.data.source = 'pairs:data/restoration/distorted,data/restoration/clear'
    config.train.learning_rate = 5e-4
    config.train.init_from = 'runs/restoration_vae_stage1'
    config.train.init_from_checkpoint = 'latest'
  return config
