"""Pictures of a model and of its process: sample grids and the forward-process picture.

A ``SampleGrid`` draws the same attribute rows with the same seeds every time, so epochs and
runs compare picture to picture. ``forward_process_image`` is the blog's advice made a
picture: how fast q(x_t | x_0) drowns the avatars, to look at before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cartoondiff import attributes
from cartoondiff.data.dataset import denormalize, normalize
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.files import save_image_atomic, write_text_atomic
from cartoondiff.image_grid import make_grid
from cartoondiff.inference.generate import generate


def grid_image(images: torch.Tensor, nrow: int) -> Image.Image:
    """uint8 images (B, 3, H, W) as one picture, ``nrow`` per row, white gaps."""
    grid = make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=255)  # (3, H', W')
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def save_grid(images: torch.Tensor, path: Path, nrow: int, captions: Sequence[str] = ()) -> Path:
    """Save uint8 images (B, 3, H, W) as one PNG grid; ``captions`` go to a .txt beside it."""
    path = Path(path)  # both files atomic: a crash never leaves a half grid to trip a resume
    save_image_atomic(grid_image(images, nrow), path)
    if captions:
        write_text_atomic(path.with_suffix(".txt"), "".join(f"{c}\n" for c in captions))
    return path


class SampleGrid:
    """``rows`` fixed attribute vectors x ``cols`` fixed seeds.

    Row ``i`` uses attribute vector ``i`` in every column, so a row shows how faithfully
    (and how diversely) the model renders one condition.
    """

    def __init__(self, rows: int = 6, cols: int = 6, seed: int = 1234) -> None:
        self.rows, self.cols, self.seed = rows, cols, seed
        g = torch.Generator().manual_seed(seed)
        self.row_ids = attributes.random_ids(rows, generator=g)  # (rows, 18)

    def captions(self, conditional: bool) -> list[str]:
        """One line per row: its attributes, or "unconditional"."""
        return [f"row {i}: {attributes.format_ids(r) if conditional else 'unconditional'}"
                for i, r in enumerate(self.row_ids)]

    def draw(self, model: nn.Module, diffusion: Diffusion, sampler: Sampler, path: Path, *,
             image_size: int, normalize: str, device: torch.device) -> tuple[Path, list[str]]:
        """Sample the grid, save it to ``path`` (+ captions .txt); returns the path and rows."""
        ids = self.row_ids.repeat_interleave(self.cols, dim=0)  # (rows*cols, 18)
        images = generate(model, diffusion, ids, sampler, image_size=image_size,
                          normalize=normalize, seed=self.seed, device=device)
        captions = self.captions(bool(getattr(model, "conditional", False)))
        return save_grid(images, path, self.cols, captions), captions


def forward_process_image(diffusion: Diffusion, images: torch.Tensor, normalize_mode: str,
                          n_steps: int = 8, seed: int = 1234) -> tuple[Image.Image, list[int]]:
    """x_t for ``n_steps`` steps from 0 to T-1 (columns) of each uint8 image (rows).

    One eps per row, so a row shows one avatar drowning in its own noise; x_t is clipped
    to the data range for display. Returns the picture and the steps of its columns.
    """
    ts = torch.linspace(0, diffusion.T - 1, n_steps).round().long().tolist()
    x0 = normalize(images, normalize_mode)  # (B, 3, H, W)
    B = x0.shape[0]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.tensor(ts).repeat(B)  # (B * n_steps,), image-major
    x_t = diffusion.q_sample(x0.repeat_interleave(n_steps, 0), t,
                             noise.repeat_interleave(n_steps, 0))  # (B * n_steps, 3, H, W)
    return grid_image(denormalize(x_t, normalize_mode), nrow=n_steps), ts
