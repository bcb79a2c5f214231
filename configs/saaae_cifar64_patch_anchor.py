"""S1 variant: SAAAE with the cheap patch-token anchor instead of the source's channel attention.

COMMAND: python train.py --config configs/saaae_cifar64_patch_anchor.py --workdir runs/saaae_patch
RESULT: see RESULTS.md (S1) for parameter counts, step times and the short held-out runs.

configs/saaae_cifar64.py with model.anchor='patch_attention': the 64 non-overlapping 8x8 patches
of the masked input are the tokens, embedded to 64 features with a learned position embedding,
one head of self-attention, flatten, Dense to the latent 128, SiLU. About 0.56M anchor parameters
instead of the channel anchor's 68.7M.
"""

import pathlib
import runpy


def get_config():
  cifar64 = runpy.run_path(str(pathlib.Path(__file__).with_name('saaae_cifar64.py')))
  config = cifar64['get_config']()
  config.model.anchor = 'patch_attention'
  config.model.anchor_patch_size = 8
  config.model.anchor_embed_dim = 64
  config.model.anchor_attention_dim = 0  # = the token width, 64
  return config
