"""Images tiled into one grid tensor, as ``torchvision.utils.make_grid`` lays them out.

Local so that drawing a grid does not import torchvision, whose import pulls in
``torch._dynamo`` and doubles the start-up time of every command (about 3 s on a busy 2-core
CPU) for one layout function.
"""

from __future__ import annotations

import math

import torch


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2,
              pad_value: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (C, H', W'): ``nrow`` images per row (fewer if B is smaller), separated
    and framed by ``padding`` px of ``pad_value``; one image is returned as it is (C, H, W).
    The same layout as ``torchvision.utils.make_grid`` (without its normalisation options)."""
    if images.dim() != 4:
        raise ValueError(f"make_grid needs (B, C, H, W) images, got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    if B == 1:
        return images[0]
    cols = min(nrow, B)
    rows = math.ceil(B / cols)
    cell_h, cell_w = H + padding, W + padding
    grid = images.new_full((C, rows * cell_h + padding, cols * cell_w + padding), pad_value)
    for i in range(B):
        r, c = divmod(i, cols)
        grid[:, r * cell_h + padding:(r + 1) * cell_h, c * cell_w + padding:(c + 1) * cell_w] = \
            images[i]
    return grid
