"""The denoising UNet f(x_t, t, context): a plain network that knows nothing of the schedule.

Residual blocks with GroupNorm, SiLU and dropout, and the timestep embedding added in every
block (DDPM, Ho et al. 2020, appendix B); a down path, a middle at the lowest resolution, and
an up path that concatenates the down path's features (Ronneberger et al. 2015). At the
levels in ``attention_levels`` each residual block is followed by optional self-attention
and by cross-attention to Tau's context tokens (the blog's ablation: no cross-attention, a
single head, or 4 heads). Levels are counted from the full resolution (level 0), so a preset
keeps its attention where it is at any image size.

Kept lean for CPU training: one skip per residual block (no extra skips from the stem or the
downsamplers), as many up blocks as down blocks, SiLU of the time embedding computed once,
attention only where asked. Conv weights are channels_last, so activations are NHWC throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cartoondiff.models.attention import AttentionBlock
from cartoondiff.models.embeddings import TimestepEmbedder
from cartoondiff.runs.errors import is_int, is_number, require


class ResBlock(nn.Module):
    """x + [GN-SiLU-Conv3 -> + time -> GN-SiLU-Dropout-Conv3](x), with a 1x1 skip if C changes.

    With ``scale_shift`` the embedding scales and shifts the second normalisation instead,
    GN(h) (1 + s) + b with (s, b) = Linear(emb) (adaptive group norm: ADM's
    use_scale_shift_norm, Dhariwal & Nichol 2021, sec. 3). The second conv starts at zero, so
    the block starts as its skip path.
    """

    def __init__(
        self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, norm_groups: int,
        scale_shift: bool = False,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(norm_groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(temb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(norm_groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), temb: (B, temb_dim) already through SiLU -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        emb = self.time(temb)[:, :, None, None]  # (B, out_ch or 2 out_ch, 1, 1)
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + emb)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Stage(nn.Module):
    """One residual block followed by the attention blocks of its resolution (maybe none)."""

    def __init__(self, res: ResBlock, attns: Sequence[AttentionBlock]) -> None:
        super().__init__()
        self.res = res
        self.attns = nn.ModuleList(attns)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None):
        """x: (B, C_in, H, W) -> (B, C_out, H, W)."""
        x = self.res(x, temb)
        for attn in self.attns:
            x = attn(x, context)
        return x


class UNet(nn.Module):
    """Noise (or v) predictor for images (B, in_channels, image_size, image_size).

    Args:
        in_channels: image channels (3); the output has the same.
        base_channels: width of the first level.
        channel_mults: width of level i is base_channels * channel_mults[i]; one level each,
            the resolution halves between levels.
        num_res_blocks: residual blocks per level in the down path (the up path has as many).
        attention_levels: levels (0 = full resolution, 1 = half, ...) that carry attention;
            the middle carries it when the lowest level is listed.
        cross_attention: attend to context tokens (False: the vanilla model, no context).
        num_heads: attention heads (1 is the blog's "single" attention); must divide the
            width of every attention level.
        context_dim: width of the context tokens (required with cross_attention).
        dropout: dropout probability inside the residual blocks.
        image_size: height = width of the input; divisible by 2**(levels - 1).
        self_attention: add self-attention before cross-attention at attention resolutions.
        norm_groups: GroupNorm groups; must divide base_channels and every level's width.
        global_context: also add Linear(mean of the context tokens) to the timestep embedding,
            so every residual block sees the whole condition (as class-conditional ADM adds
            its label embedding, and DiT conditions adaLN on t + y); the null context gives
            the unconditional branch's, so guidance works unchanged. Only where there are
            tokens: a model without cross_attention is unconditional, with no global context.
        scale_shift: residual blocks apply the (time + global) embedding as a GroupNorm scale
            and shift instead of a bias (``ResBlock``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1, 2),
        cross_attention: bool = True,
        num_heads: int = 4,
        context_dim: int | None = None,
        dropout: float = 0.0,
        image_size: int = 32,
        self_attention: bool = False,
        norm_groups: int = 32,
        global_context: bool = False,
        scale_shift: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("base_channels", base_channels), ("num_res_blocks", num_res_blocks)):
            require(is_int(value) and value >= 1, name, value, "an integer >= 1")
        require(isinstance(channel_mults, Sequence) and len(channel_mults) > 0
                and all(is_int(m) and m >= 1 for m in channel_mults), "channel_mults",
                channel_mults, "a non-empty list of integers >= 1")
        levels = len(channel_mults)
        widths = [base_channels * m for m in channel_mults]
        factor = 2 ** (levels - 1)
        require(is_int(image_size) and image_size >= factor and image_size % factor == 0,
                "image_size", image_size, f"a multiple of {factor}, so the UNet's {levels} "
                "levels (channel_mults) can halve it")
        require(isinstance(attention_levels, Sequence)
                and all(is_int(i) and 0 <= i < levels for i in attention_levels),
                "attention_levels", attention_levels,
                f"a list of level indices in 0..{levels - 1} (0 = full resolution)")
        normalised = sorted({base_channels, *widths})  # the stem's width and every level's
        require(is_int(norm_groups) and norm_groups >= 1
                and all(c % norm_groups == 0 for c in normalised),
                "norm_groups", norm_groups, f"a divisor of every width it normalises {normalised}")
        require(is_number(dropout) and 0 <= dropout < 1, "dropout", dropout, "a number in [0, 1)")
        for name, value in (("cross_attention", cross_attention),
                            ("self_attention", self_attention),
                            ("global_context", global_context), ("scale_shift", scale_shift)):
            require(isinstance(value, bool), name, value, "true or false")
        require(not cross_attention or (is_int(context_dim) and context_dim >= 1), "context_dim",
                context_dim, "an integer >= 1 (the width of Tau's tokens) with cross_attention")
        # num_heads: each AttentionBlock checks that it divides its level's width.
        attend = [i in attention_levels for i in range(levels)]
        self.cross_attention = cross_attention
        self.context_dim = context_dim if cross_attention else None
        temb_dim = 4 * base_channels

        def stage(c_in: int, c_out: int, with_attention: bool) -> Stage:
            attns = []
            if with_attention:
                if self_attention:
                    attns.append(AttentionBlock(c_out, num_heads, None, norm_groups))
                if cross_attention:
                    attns.append(AttentionBlock(c_out, num_heads, context_dim, norm_groups))
            return Stage(ResBlock(c_in, c_out, temb_dim, dropout, norm_groups, scale_shift),
                         attns)

        self.time_embed = TimestepEmbedder(base_channels, temb_dim)
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()  # per level: stages, then a stride-2 conv (not the last)
        self.downsample = nn.ModuleList()
        c = base_channels
        for i in range(levels):
            self.down.append(nn.ModuleList())
            for _ in range(num_res_blocks):
                self.down[i].append(stage(c, widths[i], attend[i]))
                c = widths[i]
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        # Middle: res + attention (when the lowest level has it) + res, at the lowest resolution.
        self.mid = nn.ModuleList([stage(c, c, attend[-1]), stage(c, c, False)])
        self.up = nn.ModuleList()  # per level (deepest first): stages, then upsampling conv
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(nn.ModuleList())
            for _ in range(num_res_blocks):  # input: h concatenated with the matching skip
                self.up[-1].append(stage(c + widths[i], widths[i], attend[i]))
                c = widths[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(norm_groups, c)
        self.out_conv = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        self.global_embed = (nn.Linear(context_dim, temb_dim) if global_context and cross_attention
                             else None)
        # Conv weights channels_last: oneDNN's CPU convolutions then run on NHWC activations,
        # 1.1-1.2x faster per training step at 32x32 and 64x64 (docs/benchmarks.md); the
        # activations stay NHWC through the network whatever the input's layout.
        self.to(memory_format=torch.channels_last)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,) long or float, context: (B, N, D) or None -> (B, C, H, W)."""
        if self.context_dim is None:
            context = None  # the vanilla model ignores any context
        elif context is None:
            raise ValueError("UNet: cross_attention=True needs a context (B, N, D)")
        temb = self.time_embed(t)  # (B, temb_dim)
        if self.global_embed is not None:
            temb = temb + self.global_embed(context.mean(dim=1))  # + the whole condition
        temb = F.silu(temb)  # SiLU once for all blocks
        h = self.stem(x)  # (B, base, H, W)
        skips = []
        for i, stages in enumerate(self.down):
            for s in stages:
                h = s(h, temb, context)  # (B, width_i, H_i, W_i)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, width_i, H_i / 2, W_i / 2)
        for s in self.mid:
            h = s(h, temb, context)
        for i, stages in enumerate(self.up):
            for s in stages:
                h = s(torch.cat([h, skips.pop()], dim=1), temb, context)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))  # (B, C, H, W)

