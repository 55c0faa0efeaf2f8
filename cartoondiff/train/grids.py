"""Sample grids written during training: the same seeds and attributes every time, so
epochs and runs compare picture to picture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from cartoondiff import attributes
from cartoondiff.data.module import AvatarDataModule
from cartoondiff.diffusion import Diffusion


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Save uint8 images (B, 3, H, W) as one PNG grid with ``nrow`` images per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=255)  # (3, H', W')
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


class SampleGridMaker:
    """Draws ``rows`` fixed attribute vectors x ``cols`` fixed noise seeds from a model.

    Row ``i`` uses attribute vector ``i`` in every column, so a row shows how faithfully
    (and how diversely) the model renders one condition.
    """

    def __init__(
        self,
        diffusion: Diffusion,
        sample_fn: Callable[..., torch.Tensor],
        data: AvatarDataModule,
        out_dir: Path,
        device: torch.device,
        rows: int = 6,
        cols: int = 6,
        seed: int = 1234,
    ) -> None:
        self.diffusion, self.sample_fn, self.data = diffusion, sample_fn, data
        self.out_dir, self.device = Path(out_dir), device
        self.rows, self.cols, self.seed = rows, cols, seed
        g = torch.Generator().manual_seed(seed)
        self.row_ids = attributes.random_ids(rows, generator=g)  # (rows, 18)

    def row_captions(self, conditional: bool) -> list[str]:
        if not conditional:
            return ["unconditional"] * self.rows
        return [attributes.format_ids(r) for r in self.row_ids]

    @torch.no_grad()
    def sample(
        self, model: nn.Module, step: int, name: str | None = None
    ) -> tuple[Path, list[str]]:
        """Sample the grid with ``model`` (the EMA weights); returns the PNG path and captions."""
        conditional = bool(getattr(model, "conditional", False))
        ids = self.row_ids.repeat_interleave(self.cols, dim=0).to(self.device)  # (rows*cols, 18)
        g = torch.Generator(self.device).manual_seed(self.seed)
        shape = (self.rows * self.cols, 3, self.data.image_size, self.data.image_size)
        was_training = model.training
        model.eval()
        x = self.sample_fn(diffusion=self.diffusion, model=model, shape=shape,
                           ids=ids if conditional else None, generator=g, device=self.device,
                           clip_range=self.data.value_range)
        model.train(was_training)
        path = self.out_dir / f"{name or f'step{step:08d}'}.png"
        save_grid(self.data.denormalize(x), path, nrow=self.cols)
        captions = self.row_captions(conditional)
        path.with_suffix(".txt").write_text(
            "".join(f"row {i}: {c}\n" for i, c in enumerate(captions)), encoding="utf-8")
        return path, captions

    def forward_process(self, n_images: int = 4, n_steps: int = 8) -> Path:
        """The blog's advice: look at q(x_t | x_0) for several t before training."""
        ts = torch.linspace(0, self.diffusion.T - 1, n_steps).round().long().tolist()
        x0 = self.data.batch(torch.arange(n_images), self.device)[0]  # (n_images, 3, H, W)
        g = torch.Generator(self.device).manual_seed(self.seed)
        grid = self.diffusion.forward_picture(x0, ts, generator=g,
                                              pad_value=self.data.value_range[1])  # (3, H', W')
        image = self.data.denormalize(grid.clamp(*self.data.value_range))  # uint8 (3, H', W')
        path = self.out_dir / "forward_process.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)
        path.with_suffix(".txt").write_text(f"columns: t = {ts}\n", encoding="utf-8")
        return path
