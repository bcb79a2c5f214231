"""Microbenchmark of the Conv impls on the conv layers of our configs.

Times each impl of one `jvae.models.layers.Conv` layer at each config's layer shapes and batch
size, alternated in one process (benchmarks/layer_form_timing.py says how).

  python benchmarks/conv_forms.py [--reps 15] [--impls native,patches,shifted] [--only resnet]

Not part of the test suite.
"""

from __future__ import annotations

import layer_form_timing

from jvae.models import layers

# (name, batch, size, Cin, Cout, kernel_size, strides, padding): the encoders' strided convs, the
# ResNet blocks' stride-1 convs and the decoders' output convs of the configs named, at their
# batch size.
SHAPES = [
    ('mnist enc k3s2SAME', 128, 28, 1, 32, 3, 2, 'SAME'),
    ('mnist enc k3s2SAME', 128, 14, 32, 64, 3, 2, 'SAME'),
    ('mnist out k3s1SAME', 128, 28, 32, 1, 3, 1, 'SAME'),
    ('default out k3s1SAME', 64, 16, 32, 1, 3, 1, 'SAME'),
    ('lfw enc k3s2p1', 64, 64, 1, 32, 3, 2, 1),
    ('lfw enc k3s2p1', 64, 32, 32, 64, 3, 2, 1),
    ('lfw enc k3s2p1', 64, 16, 64, 128, 3, 2, 1),
    ('lfw enc k3s2p1', 64, 8, 128, 256, 3, 2, 1),
    ('folder enc k3s2p1', 64, 64, 3, 32, 3, 2, 1),
    ('resnet block k3s1SAME', 64, 32, 32, 32, 3, 1, 'SAME'),
    ('resnet block k3s1SAME', 64, 16, 64, 64, 3, 1, 'SAME'),
    ('resnet block k3s1SAME', 64, 8, 128, 128, 3, 1, 'SAME'),
    ('resnet block k3s1SAME', 64, 4, 256, 256, 3, 1, 'SAME'),
    # resnet_vae_fashion_mnist: the same blocks at 32x32, a quarter of the grid.
    ('resnet32 block k3s1SAME', 64, 16, 32, 32, 3, 1, 'SAME'),
    ('resnet32 block k3s1SAME', 64, 8, 64, 64, 3, 1, 'SAME'),
    ('resnet32 block k3s1SAME', 64, 4, 128, 128, 3, 1, 'SAME'),
    ('resnet32 block k3s1SAME', 64, 2, 256, 256, 3, 1, 'SAME'),
    ('restoration enc k4s2p1', 32, 64, 3, 32, 4, 2, 1),
    ('restoration enc k4s2p1', 32, 32, 32, 64, 4, 2, 1),
    ('restoration enc k4s2p1', 32, 16, 64, 128, 4, 2, 1),
    ('restoration enc k4s2p1', 32, 8, 128, 256, 4, 2, 1),
    ('saaae enc k4s2p1', 64, 64, 3, 64, 4, 2, 1),
    ('saaae enc k4s2p1', 64, 32, 64, 128, 4, 2, 1),
    ('saaae enc k4s2p1', 64, 16, 128, 256, 4, 2, 1),
    ('saaae enc k4s2p1', 64, 8, 256, 512, 4, 2, 1),
    # Not in a config: an RGB output conv, and narrowing stride-1 convs, to place the rule's
    # boundary between the patch and shifted forms.
    ('rgb out k3s1SAME', 64, 32, 32, 3, 3, 1, 'SAME'),
    ('narrowing k3s1SAME', 64, 32, 64, 16, 3, 1, 'SAME'),
    ('narrowing k3s1SAME', 64, 32, 64, 32, 3, 1, 'SAME'),
    ('narrowing k3s1SAME', 64, 16, 128, 32, 3, 1, 'SAME'),
]


def make_module(shape) -> layers.Conv:
  _, _, _, _, cout, k, s, padding = shape
  return layers.Conv(cout, k, s, padding)


def fast_form(shape) -> str:
  _, _, size, cin, cout, k, s, padding = shape
  out = layers.conv_output_length(size, k, s, layers.conv_output_padding(size, k, s, padding))
  return layers.fast_conv_form(k, s, cin, cout, (out, out))


if __name__ == '__main__':
  layer_form_timing.main(__doc__, SHAPES, layers.IMPLS, 'native,patches,shifted', make_module,
                         fast_form)
