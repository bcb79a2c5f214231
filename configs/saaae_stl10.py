"""S1: SAAAE, the self-attention anchored VAE, recovering STL-10 images with 16 masked patches.

COMMAND: python train.py --config configs/saaae_stl10.py --workdir runs/saaae_stl10
RESULT: not run here (STL-10 needs a network or a prepared data.tfds_data_dir); the offline twin
is configs/saaae_cifar64.py, whose measured numbers are in RESULTS.md.

The source's notebook: images 64x64 in [-1, 1]; the input is the image with sixteen 8x8 patches
set to 0 (corruption strength 0.5), the target the clean image. Encoder Conv 4x4/2/1
3->64->128->256->512 with ReLU, flatten, Dense to mu and logvar (latent 128); decoder Dense to
4x4x512, ConvTranspose 4x4/2/1 512->256->128->64->3, tanh. The anchor ('channel_attention') reads
the masked input as 3 channel tokens of 64*64 features, one head of self-attention, Dense to 128,
SiLU, min-max normalised to a_norm; z = mu + std * eps * (1 - a_norm). Loss: summed squared
error + summed KL. Held-out scores (sse = the source's per-image "MSE", psnr, ssim, and the
masked input's input_* baselines) come from `python -m jvae.evaluate --workdir runs/saaae_stl10`;
`python -m jvae.reports.saaae --workdir runs/saaae_stl10` draws original | masked |
reconstruction | anchor map.

Options beside the source's choices:
- --config.model.anchor_normalization=batch: min-max over the whole batch (the source's), instead
  of per example with a safe denominator (the default).
- --config.model.anchor_kl_weighting=noise_mask: the KL of each dimension weighted by its noise
  mask (the README's "KL selectively applied"); 'full' is the notebook's.
- --config.corruption.kind=random_patches_per_batch: one set of patch positions per batch, as the
  source drew them; the default draws them for each image.
- --config.model.anchor=patch_attention: the cheap anchor (configs/saaae_cifar64_patch_anchor.py).
- --config.model.anchor=none: the plain VAE of the comparison (configs/vae_cifar64.py).
The source's optimizer settings are not in its write-up; Adam at 1e-3 (the usual notebook
default) is our assumption.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'tfds:stl10'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.image_size = 64
  config.data.channels = 3
  config.data.value_range = 'symmetric'
  config.task = 'denoise'
  config.corruption.kind = 'random_patches'
  config.corruption.strength = 0.5  # sixteen 8x8 patches at 64x64, filled with 0 (mid-grey)
  config.model.kind = 'vae'
  config.model.latent_dim = 128
  config.model.encoder_features = (64, 128, 256, 512)
  config.model.decoder_features = (512, 256, 128, 64)  # the last ConvTranspose outputs the image
  config.model.kernel_size = 4
  config.model.strides = 2
  config.model.padding = 1
  config.model.hidden_dims = ()
  config.model.decoder_hidden_dims = ()
  config.model.activation = 'relu'
  config.model.output_activation = 'tanh'
  config.model.anchor = 'channel_attention'
  config.model.anchor_normalization = 'per_example'
  config.model.anchor_kl_weighting = 'full'
  config.loss.reconstruction = 'mse'
  config.loss.beta = 1.0
  config.train.batch_size = 64
  config.train.eval_batch_size = 128
  config.train.num_train_steps = 20000
  config.train.learning_rate = 1e-3
  config.train.eval_every_steps = 2000
  config.train.checkpoint_every_steps = 1000
  return config
