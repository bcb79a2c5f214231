"""Microbenchmark of the ConvTranspose impls on the decoder layers of our configs.

Times each impl of one `jvae.models.layers.ConvTranspose` layer at each config's layer shapes and
batch size, alternated in one process (benchmarks/layer_form_timing.py says how).

  python benchmarks/conv_transpose_forms.py [--reps 15] [--impls native,fused,phases,shared]
      [--only saaae]

Not part of the test suite: 'native' alone takes seconds per rep on the larger layers.
"""

from __future__ import annotations

import layer_form_timing

from jvae.models import layers

# (name, batch, size, Cin, Cout, kernel_size, strides, padding, output_padding): every decoder
# transposed conv of the configs named, at their batch size.
SHAPES = [
    ('saaae k4s2p1', 64, 4, 512, 256, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 8, 256, 128, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 16, 128, 64, 4, 2, 1, 0),
    ('saaae k4s2p1', 64, 32, 64, 3, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 4, 256, 128, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 8, 128, 64, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 16, 64, 32, 4, 2, 1, 0),
    ('restoration k4s2p1', 32, 32, 32, 3, 4, 2, 1, 0),
    ('mnist_cvae k3s2SAME', 128, 7, 64, 64, 3, 2, 'SAME', 0),
    ('mnist_cvae k3s2SAME', 128, 14, 64, 32, 3, 2, 'SAME', 0),
    ('resnet_vae k3s2p1op1', 64, 4, 256, 128, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 8, 128, 64, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 16, 64, 32, 3, 2, 1, 1),
    ('resnet_vae k3s2p1op1', 64, 32, 32, 1, 3, 2, 1, 1),
]


def make_module(shape) -> layers.ConvTranspose:
  _, _, _, _, cout, k, s, padding, output_padding = shape
  return layers.ConvTranspose(cout, k, s, padding, output_padding)


def fast_form(shape) -> str:
  del shape  # 'fast' runs 'scatter' for every transposed conv on CPU (layers.conv_transpose_fast)
  return 'scatter'


if __name__ == '__main__':
  layer_form_timing.main(__doc__, SHAPES, layers.CONV_TRANSPOSE_IMPLS,
                         'native,fused,phases,shared,scatter', make_module, fast_form)
