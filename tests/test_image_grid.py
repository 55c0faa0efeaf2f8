"""inference.grids.make_grid lays images out exactly as torchvision.utils.make_grid does."""

from __future__ import annotations

import pytest
import torch
from torchvision.utils import make_grid as torchvision_make_grid

from cartoondiff.inference.grids import make_grid


@pytest.mark.parametrize("b, nrow", [(1, 4), (3, 4), (4, 4), (5, 4), (7, 3), (2, 8)])
@pytest.mark.parametrize("dtype, pad_value", [(torch.uint8, 255), (torch.float32, 1.0)])
def test_same_layout_as_torchvision(b, nrow, dtype, pad_value):
    images = (torch.rand(b, 3, 5, 6, generator=torch.Generator().manual_seed(b)) * 200).to(dtype)
    expected = torchvision_make_grid(images, nrow=nrow, padding=2, pad_value=pad_value)
    assert torch.equal(make_grid(images, nrow=nrow, padding=2, pad_value=pad_value), expected)
