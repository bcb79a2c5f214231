"""A conv VAE on dynamically binarized MNIST, the standard likelihood protocol: Bernoulli
likelihood, training images re-binarized at every step, the test set binarized once (keyed by
seed and example index), evaluated with the IWAE bound.

COMMAND: python train.py --config configs/mnist_binarized_vae.py --workdir runs/mnist_binarized_vae
EVAL:    python -m jvae.evaluate --workdir runs/mnist_binarized_vae --checkpoint latest \
           --iwae_samples 5000 --iwae_chunk 40 --iwae_max_batches 1
References (test NLL, nats): one-stochastic-layer VAE 86.76 and IWAE(k=50) 84.78 (Burda et al.
2015, Table 1); the Flax example MLP VAE's test loss is about 104 after 10 epochs.
RESULT: RESULTS.md (likelihood): 5 epochs, negative ELBO 100.29 on the test set, IWAE(K=5000)
91.12 on its first 128 images.
Offline data: ../shared/data/mnist.npz; on a connected machine data.source='tfds:mnist'.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/mnist.npz'
  config.data.binarize = 'dynamic'
  config.model.latent_dim = 32
  config.model.encoder_features = (32, 64)
  config.model.hidden_dims = (512,)
  config.model.decoder_hidden_dims = (512,)
  config.train.batch_size = 128
  config.train.eval_batch_size = 128
  config.train.num_train_steps = 4690  # 10 epochs of 60000
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.eval_every_steps = 2345
  config.train.checkpoint_every_steps = 1000
  return config
