"""jvae: variational autoencoders and autoencoders on images, in JAX and Flax."""

__version__ = '0.1.0'
