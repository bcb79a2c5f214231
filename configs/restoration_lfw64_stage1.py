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

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/lfw_gray64_subset.npz'
  config.data.image_size = 64
  config.data.channels = 1
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
  config.train.learning_rate = 1e-3
  config.train.stage = 'stage1'
  config.train.num_train_steps = 400
  config.train.eval_every_steps = 1000  # only the final eval
  config.train.checkpoint_every_steps = 200
  return config
