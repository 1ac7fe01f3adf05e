"""The network: StyleGAN2's generator in plain PyTorch (``networks``) and its resampling and
modulated-convolution ops, each fast path beside its plain reference (``ops``)."""

from . import ops
from .networks import Generator, GeneratorConfig

__all__ = ["Generator", "GeneratorConfig", "ops"]
