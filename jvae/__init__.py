"""jvae: variational autoencoders and autoencoders on images, in JAX and Flax."""

__version__ = '0.1.0'


def load(*args, **kwargs):
  """`jvae.inference.load`: a trained run ready to encode, decode, restore and score images.

  Imported lazily so that `import jvae` stays light (no JAX or Flax until a model is loaded).
  """
  from jvae.inference import load as _load  # pylint: disable=g-import-not-at-top
  return _load(*args, **kwargs)
