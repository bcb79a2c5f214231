"""S6 stage 1: the restoration VAE with skip connections learns clear images (x -> x), CIFAR-64.

COMMAND: python train.py --config configs/restoration_cifar64_stage1.py \
    --workdir runs/restoration_cifar64_stage1
RESULT: see RESULTS.md (S6)

SPEC S6's model at 64x64x3 (the source's is 128x128x3, `configs/restoration_vae.py`): encoder
Conv 4x4 s2 p1 3->32->64->128->256 ReLU (64 -> 4 px), Dense 256*4*4 -> 512 ReLU -> mu/logvar (128);
decoder Dense 128 -> 512 -> 256*4*4 ReLU, ConvT 4x4 s2 p1 256->128->64->32->3, the matching
encoder feature map added after each of the first three ConvT, then ReLU; sigmoid out. BCE summed
over pixels + beta * KL, Adam 1e-3. Stage 2 (`restoration_cifar64_stage2.py`) fine-tunes this
run's checkpoint on distorted -> clear pairs.

Data: the offline CIFAR-10 subset (10000 train / 2000 test, 32x32) resized to 64x64 RGB, paths
relative to the repo root; `--config.data.source=tfds:cifar10` reads the full set where a network
exists, `folder:<clear_dir>` a folder of clear images.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/cifar10_32_subset.npz'
  config.data.image_size = 64
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
  # Short CPU runs (see RESULTS.md); the source trains for many epochs.
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.stage = 'stage1'
  config.train.num_train_steps = 400
  config.train.eval_every_steps = 1000  # only the final eval
  config.train.checkpoint_every_steps = 200
  return config
