"""Attention blocks for the UNet: image features attend to context tokens (or to themselves).

One block serves the blog's whole ablation: ``num_heads=1`` is its "single" attention,
``num_heads=4`` its "multi-head cross attention" (``mha4``). Self-attention is the same block
with keys and values taken from the image features instead of Tau's tokens.

Block: x + W_o · softmax(Q Kᵀ / sqrt(d)) V (Vaswani et al. 2017, eq. 1) with
Q = W_q · GroupNorm(x) and K, V = W_kv · context. W_o starts at zero, so each block starts as
the identity and the UNet starts as if it had no attention (as in ADM's zero_module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cartoondiff.runs.errors import is_int, require


class AttentionBlock(nn.Module):
    """Residual multi-head attention over the H*W positions of a feature map.

    Args:
        channels: C, the feature map's channels (also the attention width).
        num_heads: heads; must divide ``channels``.
        context_dim: width D of the context tokens for cross-attention; ``None`` makes it
            self-attention (keys and values from the image features).
        norm_groups: GroupNorm groups; must divide ``channels``.
    """

    def __init__(
        self, channels: int, num_heads: int, context_dim: int | None = None, norm_groups: int = 32
    ) -> None:
        super().__init__()
        require(is_int(num_heads) and num_heads >= 1 and channels % num_heads == 0, "num_heads",
                num_heads, f"a divisor of {channels}, the channels of the feature map it attends "
                "over (each head takes an equal share)")
        self.num_heads = num_heads
        self.is_cross = context_dim is not None
        self.norm = nn.GroupNorm(norm_groups, channels)
        if self.is_cross:
            self.to_q = nn.Linear(channels, channels, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * channels, bias=False)
        else:  # one matmul for q, k and v
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W), context: (B, N, D) for cross-attention -> (B, C, H, W)."""
        B, C, H, W = x.shape
        nh = self.num_heads
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C); a view for channels_last x
        if self.is_cross:
            q = self.to_q(h)  # (B, HW, C)
            k, v = self.to_kv(context).chunk(2, dim=-1)  # (B, N, C) each
        else:
            q, k, v = self.to_qkv(h).chunk(3, dim=-1)  # (B, HW, C) each
        # Split heads as strided views; SDPA accepts them without a copy. q: (B, nh, HW, C/nh),
        # k and v: (B, nh, N, C/nh) (N = HW for self-attention).
        q, k, v = (z.unflatten(-1, (nh, C // nh)).transpose(1, 2) for z in (q, k, v))
        if self.is_cross:
            # A few context tokens: written out, as torch's fused CPU kernel is built for long
            # keys and its backward made this block a fifth of a bf16 training step
            # (docs/benchmarks.md); same math, softmax in fp32.
            scores = (q @ k.transpose(-2, -1)) * (C // nh) ** -0.5  # (B, nh, HW, N)
            o = scores.softmax(-1, dtype=torch.float32).to(v.dtype) @ v  # (B, nh, HW, C/nh)
        else:
            o = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, C/nh)
        o = self.to_out(o.transpose(1, 2).flatten(2))  # (B, HW, C)
        return x + o.transpose(1, 2).unflatten(-1, (H, W))  # (B, C, H, W)
