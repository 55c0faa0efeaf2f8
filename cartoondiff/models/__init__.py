"""The denoising network f(x_t, t, context): the UNet, its attention blocks and embeddings, and
Tau, which turns the 18 attributes into context tokens (``Tau``, ``PerAttributeTau``); the
``Denoiser`` joins them. It knows nothing of the noise schedule."""

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
