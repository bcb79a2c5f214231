"""S3: the conditional VAE with a learned label Embedding(10 -> 8) instead of the one-hot vector;
otherwise configs/mnist_cvae_onehot.py (latent 2, BCE + KL, Adam 1e-3, batch 128, 4690 steps =
10 epochs). The 8-vector is concatenated after the encoder's flatten and to the decoder's z.

COMMAND: python train.py --config configs/mnist_cvae_embedding.py \
  --workdir runs/mnist_cvae_embedding
RESULT: see RESULTS.md (S3)

Data: the offline MNIST copy beside the repository (paths are relative to the repo root, where
train.py runs); on a connected machine `--config.data.source=tfds:mnist` reads the same data.
"""

from jvae.config import base_config


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/mnist.npz'
  config.data.channels = 1
  config.model.latent_dim = 2
  config.model.conditioning = 'embedding'
  config.model.label_embedding_dim = 8
  config.model.encoder_features = (32, 64)
  config.model.hidden_dims = (128,)
  config.train.batch_size = 128
  config.train.num_train_steps = 4690
  config.train.learning_rate = 1e-3
  # One epoch is 469 steps.
  config.train.eval_every_steps = 938
  config.train.checkpoint_every_steps = 469
  return config
