"""S5 one-class MNIST: an MLP autoencoder trained without one digit, that digit the anomaly.

COMMAND (the ten digits, one run each, then the AUROC table):
  python -m jvae.sweep --config configs/mnist_one_class_ae.py --workdir runs/mnist_one_class
  python -m jvae.reports.one_class --workdir runs/mnist_one_class
RESULT: see RESULTS.md (S5, one-class MNIST).

Each sweep point sets `data.exclude_labels=(d,)`: the model trains on the nine other digits of the
training split and its threshold comes from their reconstruction errors; the normal held-out set
is the test split without d, the anomalies the test images of d. One digit alone:
  python train.py --config configs/mnist_one_class_ae.py --workdir runs/one_class_3 \\
    --config.data.exclude_labels='(3,)'
  python -m jvae.anomaly --workdir runs/one_class_3 --anomalies npz:../shared/data/mnist.npz \\
    --anomaly_labels 3
"""

from jvae.config import base_config

DIGITS = tuple(range(10))


def get_config():
  config = base_config()
  config.data.source = 'npz:../shared/data/mnist.npz'  # relative to the repo root
  config.data.channels = 1
  config.data.exclude_labels = (0,)
  config.model.kind = 'ae'
  config.model.encoder = 'mlp'
  config.model.decoder = 'mlp'
  config.model.hidden_dims = (512, 256)  # the decoder mirrors them
  config.model.latent_dim = 32
  config.loss.reconstruction = 'mse'
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = 'cosine'
  config.train.num_train_steps = 1000  # about 2.4 epochs of the ~54000 images of nine digits
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  config.train.progress_bar = False
  return config


def sweep(add):
  for digit in DIGITS:
    add(**{'data.exclude_labels': (digit,)})
