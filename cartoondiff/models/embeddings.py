"""Timestep embedding: sinusoidal features of t followed by a small MLP.

The sinusoid is the Transformer's positional encoding (Vaswani et al. 2017, sec. 3.5) applied
to the diffusion step, as in DDPM (Ho et al. 2020, appendix B). The MLP output is added in
every residual block of the UNet, each block with its own projection.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of diffusion steps.

    Args:
        t: (B,) steps, long or float (fractional steps are fine).
        dim: even feature width.
    Returns:
        (B, dim) float32: [cos(t * f_k), sin(t * f_k)] with f_k = max_period^(-k / (dim/2)).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )  # (half,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


class TimestepEmbedder(nn.Module):
    """t (B,) -> (B, out_dim): sinusoid of width ``freq_dim``, then Linear-SiLU-Linear."""

    def __init__(self, freq_dim: int, out_dim: int) -> None:
        super().__init__()
        if freq_dim < 2 or freq_dim % 2:
            raise ValueError(f"TimestepEmbedder: freq_dim must be even and >= 2, got {freq_dim}")
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B,) long or float -> (B, out_dim)."""
        return self.mlp(sinusoidal_embedding(t, self.freq_dim))
