"""Sample-grid pictures (Pillow): a run's grid after an epoch, runs side by side, the blog's
figures of an experiment, and the forward process of a config."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff.runs import cli
from cartoondiff.runs.errors import is_int
from cartoondiff.runs.files import save_image_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.runs.naming import run_title
from cartoondiff.runs.records import RunFolderError, open_image, read_run_config

FIGURE_NAME = re.compile(r"[A-Za-z0-9][\w.+-]{0,99}")  # a plain file name, no path


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """Epoch -> sample grid PNG of a run directory."""
    found = RunFolder(run_dir).epoch_grids()
    if not found:
        raise RunFolderError(f"{run_dir}: no samples/epochNNN.png grids (is this a run folder?)")
    return found


def pick_grid(run_dir: Path, epoch: int | None) -> tuple[int, Path]:
    grids = epoch_grids(run_dir)
    if epoch is None:
        epoch = max(grids)
    if epoch not in grids:
        raise RunFolderError(f"{run_dir} has no grid for epoch {epoch}; it has {list(grids)}")
    return epoch, grids[epoch]


def titled(image: Image.Image, title: str, scale: int = 2) -> Image.Image:
    """``image`` enlarged ``scale`` times (nearest, so pixels stay visible) under a title bar."""
    image = image.convert("RGB").resize((image.width * scale, image.height * scale),
                                        Image.Resampling.NEAREST)
    font = ImageFont.load_default()
    bar = 24
    out = Image.new("RGB", (image.width, image.height + bar), "white")
    out.paste(image, (0, bar))
    ImageDraw.Draw(out).text((6, 5), title, fill="black", font=font)
    return out


def side_by_side(panels: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def grid_figure(run_dir: Path, epoch: int | None = None) -> Image.Image:
    epoch, path = pick_grid(run_dir, epoch)
    return titled(open_image(path), f"{run_title(run_dir)} - epoch {epoch}")


def compare_figure(run_dirs: Sequence[Path], epoch: int | None = None) -> Image.Image:
    return side_by_side([grid_figure(Path(d), epoch) for d in run_dirs])


def blog_figures(run_dir: Path, out_dir: Path) -> list[Path]:
    """Each figure of the run's experiment (config ``figures``: name -> epoch) as a titled
    grid ``out_dir/NAME.png``; the nearest earlier epoch when the run has not reached it."""
    cfg_path = RunFolder(run_dir).config
    wanted = read_run_config(run_dir).get("figures")
    if not wanted:
        raise RunFolderError(f"{run_dir}: its config names no blog figures (run an experiment: "
                             "python run.py experiment=NAME ...)")
    # The run folder is untrusted: every name a plain file name (it cannot leave out_dir),
    # every epoch an integer, all checked before anything is written.
    if not isinstance(wanted, dict):
        raise RunFolderError(f"{cfg_path}: figures={wanted!r} is invalid: expected a mapping "
                             "of figure names to epochs")
    for name, epoch in wanted.items():
        if not (isinstance(name, str) and FIGURE_NAME.fullmatch(name)):
            raise RunFolderError(f"{cfg_path}: figures.{name!r} is invalid: expected a plain "
                                 "file name (letters, digits, _ . + -), written inside out=")
        if not (is_int(epoch) and epoch >= 0):
            raise RunFolderError(f"{cfg_path}: figures.{name}={epoch!r} is invalid: expected "
                                 "an epoch, an integer >= 0")
    grids = epoch_grids(run_dir)
    written = []
    for name, epoch in wanted.items():
        have = max((e for e in grids if e <= epoch), default=min(grids))
        note = "" if have == epoch else f" (the blog's epoch {epoch} is not in this run)"
        title = f"{name}: {run_title(run_dir)} - epoch {have}{note}"
        path = save_image_atomic(titled(open_image(grids[have]), title),
                                 Path(out_dir) / f"{name}.png")
        written.append(path)
    return written


def forward_figure(overrides: Sequence[str]) -> Image.Image:
    """The forward-process picture of the config given by ``overrides`` (no training)."""
    import torch

    from cartoondiff.config import build, build_diffusion
    from cartoondiff.inference.grids import forward_process_image

    cfg = cli.compose(overrides)
    data = build(cfg, "data").setup(labeled=False)
    diffusion = build_diffusion(cfg)
    images = torch.as_tensor(data.data.images[:4])  # uint8 (4, 3, H, W)
    picture, ts = forward_process_image(diffusion, images, data.normalize)
    schedule = {k: v for k, v in OmegaConf.to_container(cfg.noise_schedule).items()
                if k != "_target_"}
    return titled(picture, f"forward process {schedule} columns: t = {ts}")
