"""The denoising network: UNet, attention blocks, Tau conditioning."""

from cartoondiff.models.attention import AttentionBlock
from cartoondiff.models.denoiser import Denoiser
from cartoondiff.models.embeddings import TimestepEmbedder, sinusoidal_embedding
from cartoondiff.models.tau import PROJECTION_DEPTHS, PerAttributeTau, Tau
from cartoondiff.models.unet import UNet

__all__ = [
    "PROJECTION_DEPTHS",
    "AttentionBlock",
    "Denoiser",
    "PerAttributeTau",
    "Tau",
    "TimestepEmbedder",
    "UNet",
    "sinusoidal_embedding",
]
