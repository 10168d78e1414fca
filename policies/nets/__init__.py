"""Denoising networks: `f(noisy action chunk, timestep, observation feature) -> chunk-shaped output`."""

from .transformer import TransformerDenoiser
from .unet1d import ConditionalUnet1D

__all__ = ["ConditionalUnet1D", "TransformerDenoiser"]
