"""S2: the ResNet conv VAE on built-in speckle patterns (64x64, grayscale, [0, 1]).

COMMAND: python train.py --config configs/resnet_vae_speckle.py --workdir runs/resnet_vae_speckle
RESULT: not run at full length here; the short beta sweep measured on 2 CPU cores is in
RESULTS.md (S2). The sweep over beta is configs/resnet_vae_speckle_beta_sweep.py.

The source's network: encoder of 4 stride-2 3x3 convs, each followed by a ResNet block, SiLU,
Dense to mu and logvar (latent 512); decoder Dense to 4x4x256, 4 stride-2 3x3 transposed convs
(PyTorch padding 1, output_padding 1), SiLU, sigmoid. Loss: summed squared error + beta * KL.
Gradient clipping (global norm 1) and lr 1e-4 against the exploding gradients the source met.
Channel widths are not in the source's write-up; 32-64-128-256 is our choice. model.resnet_blocks
is shared by encoder and decoder, so the decoder stages get a ResNet block too.

Posterior collapse shows in the eval metrics: `kl_per_dim` (nats per latent dimension) and
`active_units` (dimensions whose posterior mean varies over the data, Burda et al. 2016). With a
summed squared error the implied decoder variance is 1/2, far above the speckle's pixel variance
(about 0.06 on [0, 1]), so beta = 1 over-weights the KL; the source lowered beta for the same
reason.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'builtin:speckle'
  config.data.image_size = 64
  config.data.channels = 1
  config.data.value_range = 'unit'
  config.model.kind = 'vae'
  config.model.latent_dim = 512
  config.model.encoder_features = (32, 64, 128, 256)
  config.model.decoder_features = (256, 128, 64, 32)  # the last transposed conv outputs the image
  config.model.kernel_size = 3
  config.model.strides = 2
  config.model.padding = 1
  config.model.resnet_blocks = 1
  config.model.hidden_dims = ()
  config.model.decoder_hidden_dims = ()
  config.model.activation = 'silu'
  config.model.output_activation = 'sigmoid'
  config.loss.reconstruction = 'mse'
  config.loss.beta = 0.01
  config.train.batch_size = 64
  config.train.num_train_steps = 5000
  config.train.learning_rate = 1e-4
  config.train.grad_clip_norm = 1.0
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  return config
