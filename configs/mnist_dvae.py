"""S4: the denoising VAE of the Keras MNIST source, trained on (corrupted -> clean) pairs made on
the fly inside the compiled step. Latent 16, the S3 conv stack without labels (Conv 32, 64 stride
2, Dense 128, mu/logvar 16; Dense 3136, ConvT 64, 32 stride 2, output conv, sigmoid), BCE + KL,
Adam 1e-3, batch 128, 5 epochs = 2345 steps. The default corruption is the source's 28 -> 14 -> 28
resize (downsample_blur at strength 0.5); other kinds by override, e.g.
`--config.corruption.kind=gaussian_noise --config.corruption.strength=0.3`. The eval metrics
hold psnr/ssim of the restoration and input_psnr/input_ssim of the corrupted input, both against
the clean held-out image.

COMMAND: python train.py --config configs/mnist_dvae.py --workdir runs/mnist_dvae_downsample_blur
RESULT: see RESULTS.md (S4)

Data: the offline MNIST copy beside the repository (paths are relative to the repo root, where
train.py runs); on a connected machine `--config.data.source=tfds:mnist` reads the same data.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.task = 'denoise'
  config.corruption.kind = 'downsample_blur'
  config.corruption.strength = 0.5
  config.data.source = 'npz:../shared/data/mnist.npz'
  config.data.channels = 1
  config.model.latent_dim = 16
  config.model.encoder_features = (32, 64)
  config.model.hidden_dims = (128,)
  config.train.batch_size = 128
  config.train.num_train_steps = 2345
  config.train.learning_rate = 1e-3
  # One epoch is 469 steps.
  config.train.eval_every_steps = 938
  config.train.checkpoint_every_steps = 469
  config.train.best_metric = 'psnr'
  config.train.best_mode = 'max'
  return config
